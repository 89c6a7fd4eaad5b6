"""Random-access data sources: `len(source)` and `source[i] -> dict of numpy arrays`.

Every source returns one example per index as a flat dict of numpy arrays (images are uint8 HWC,
labels int32 scalars). The pipeline (`zoo.data.pipeline`) only relies on `__len__`/`__getitem__`,
so a future video-clip source (`{"video": uint8 THWC, "label": int32}`) plugs in unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

Example = dict[str, np.ndarray]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from a source: random access to dict examples."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Example: ...


class ArraySource:
    """A source over in-memory arrays that share their leading dimension.

    Args:
      arrays: feature name -> array with one row per example (e.g. {"image": uint8 NHWC, "label": int32 N}).
      class_names: optional label names, exposed as `source.class_names`.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None):
        lengths = {name: len(value) for name, value in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all arrays must have the same length, got {lengths}")
        self.arrays = {name: np.asarray(value) for name, value in arrays.items()}
        self._length = next(iter(lengths.values()))
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def num_classes(self) -> int | None:
        """Number of classes, when the source knows its label names."""
        return len(self.class_names) if self.class_names is not None else None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Example:
        index = _check_index(index, self._length)
        return {name: value[index] for name, value in self.arrays.items()}

    def __repr__(self) -> str:
        shapes = {name: value.shape[1:] for name, value in self.arrays.items()}
        return f"ArraySource(len={self._length}, features={shapes})"


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a source of length {length}")
    return index


def list_class_folder(
    root: Path, extensions: Sequence[str], kind: str, example: str
) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, class_names) of a class-per-folder tree `root/<class_name>/**/<file>`: class names are the
    sorted sub-folder names, label i the i-th name, files (suffix in `extensions`, any case) in sorted order. A
    missing folder, no class folder or no file is a FileNotFoundError naming the `kind` ("image", "video") and the
    expected layout (`example`: the file part of it, e.g. "<image>.jpg|png")."""
    expected = f"expected a class-per-folder layout: <root>/<class_name>/{example}"
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder dataset not found: {str(root)!r} does not exist; {expected}")
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not class_names:
        raise FileNotFoundError(f"no class sub-folders in {str(root)!r}; {expected}")
    suffixes = tuple(extension.lower() for extension in extensions)
    files: list[str] = []
    labels: list[int] = []
    for label, class_name in enumerate(class_names):
        for dirpath, dirnames, filenames in os.walk(root / class_name, followlinks=True):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.lower().endswith(suffixes):
                    files.append(os.path.join(dirpath, filename))
                    labels.append(label)
    if not files:
        raise FileNotFoundError(f"no {kind} files ({', '.join(suffixes)}) under {str(root)!r}; {expected}")
    return files, labels, class_names


def load_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file with PIL into uint8 HWC RGB (grey and palette images are converted)."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


class ImageFolderSource:
    """Class-per-folder image tree: `root/<class_name>/<image>.{jpg,png,...}`.

    Class names are the sorted sub-folder names and label i is the i-th name. Files are listed in
    sorted order, so indices are stable across hosts and runs.

    A file that fails to decode is skipped: it is counted once (`num_corrupt`, `corrupt_files`), a
    warning names it, and the next readable file (in index order) is returned in its place, so the
    epoch length and batch shapes stay fixed and the result is still deterministic. With
    `validate=True` every file is decoded once up front and corrupt files are dropped from the index.

    Args:
      root: the dataset folder (or a split folder such as `root/train`).
      extensions: file suffixes (lower case) that count as images.
      validate: decode every file at construction and drop the unreadable ones.
      decode: path -> uint8 HWC array; defaults to PIL RGB decoding.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        validate: bool = False,
        decode: Callable[[str], np.ndarray] = load_image_rgb,
    ):
        self.root = Path(root).expanduser()
        files, labels, self.class_names = list_class_folder(self.root, extensions, "image", "<image>.jpg|png")
        self._decode = decode
        self._lock = threading.Lock()
        self._corrupt: set[str] = set()
        if validate:
            keep = [i for i, path in enumerate(files) if self._try_decode(path) is not None]
            files = [files[i] for i in keep]
            labels = [labels[i] for i in keep]
            if not files:
                raise ValueError(f"every image under {str(self.root)!r} failed to decode")
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int32)

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.class_names)

    @property
    def num_corrupt(self) -> int:
        """How many distinct files failed to decode so far."""
        with self._lock:
            return len(self._corrupt)

    @property
    def corrupt_files(self) -> list[str]:
        """The files that failed to decode so far, sorted."""
        with self._lock:
            return sorted(self._corrupt)

    def _try_decode(self, path: str) -> np.ndarray | None:
        try:
            return self._decode(path)
        except Exception as error:  # noqa: BLE001 - any decoder failure means "skip this file"
            with self._lock:
                first_time = path not in self._corrupt
                self._corrupt.add(path)
            if first_time:
                message = f"skipping corrupt image {path!r} ({type(error).__name__}: {error})"
                logger.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            return None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Example:
        index = _check_index(index, len(self.files))
        for offset in range(len(self.files)):
            candidate = (index + offset) % len(self.files)
            image = self._try_decode(self.files[candidate])
            if image is not None:
                return {"image": image, "label": self.labels[candidate]}
        raise ValueError(f"every image under {str(self.root)!r} failed to decode")

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.root)!r}, len={len(self)}, classes={self.num_classes})"


class TfdsSource:
    """A prepared TFDS dataset read through `tfds.data_source` (ArrayRecord; needs no TensorFlow).

    Give either `name` (+ optional `data_dir`, the builder must be registered, i.e. a TFDS catalog
    dataset or a builder class that was imported) or `builder_dir` (a prepared
    `<data_dir>/<name>/<version>` folder, no builder code needed). The dataset must have been
    prepared in `array_record` format beforehand (`tfds build --file_format=array_record`); this
    class never downloads or prepares.

    By default the full split is read and the pipeline shards it per host (global-index sharding,
    see `make_pipeline`). With `shard_by_process=True` the split is instead cut with
    `tfds.split_for_jax_process` so this source only holds this host's part; then call
    `make_pipeline(..., shard_by_process=False)`.

    Args:
      name: TFDS dataset name, e.g. "mnist" or "imagenet2012:5.1.0".
      split: TFDS split string, e.g. "train", "validation[:10%]".
      data_dir: where TFDS prepared data lives (defaults to TFDS's own default).
      builder_dir: a prepared dataset version folder (instead of `name`).
      feature_map: rename features, e.g. {"image": "image", "label": "label"} (source -> output);
        features not named are dropped. None keeps every feature.
      shard_by_process: cut the split per host with `tfds.split_for_jax_process`.
      process_index, process_count: host identity for that cut (default: jax's).
      decoders: passed to TFDS (e.g. to skip decoding a feature).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        builder_dir: str | os.PathLike | None = None,
        feature_map: Mapping[str, str] | None = None,
        shard_by_process: bool = False,
        process_index: int | None = None,
        process_count: int | None = None,
        decoders: Any = None,
    ):
        import tensorflow_datasets as tfds  # imported lazily: it is slow and only this source needs it

        if (name is None) == (builder_dir is None):
            raise ValueError("give exactly one of `name` or `builder_dir`")
        if shard_by_process:
            if process_index is None or process_count is None:
                import jax

                process_index = jax.process_index() if process_index is None else process_index
                process_count = jax.process_count() if process_count is None else process_count
            split = tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
        self.split = split
        self.feature_map = dict(feature_map) if feature_map is not None else None
        if builder_dir is not None:
            builder_dir = Path(builder_dir).expanduser()
            if not builder_dir.is_dir():
                raise FileNotFoundError(
                    f"TFDS builder_dir {str(builder_dir)!r} does not exist; expected a prepared "
                    "<data_dir>/<name>/<version> folder with dataset_info.json and *.array_record-* files"
                )
            builder = tfds.builder_from_directory(str(builder_dir))
            self.name = builder.name
            self._data = builder.as_data_source(split=split, decoders=decoders)
            info = builder.info
        else:
            self.name = name
            try:
                builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
            except Exception as error:  # re-raised with the layout we expect
                raise FileNotFoundError(
                    f"cannot open TFDS dataset {name!r} (data_dir={data_dir!s}): {str(error).splitlines()[0]} "
                    f"Prepare it with "
                    f"`tfds build {name} --file_format=array_record --data_dir=DIR` or pass builder_dir="
                ) from error
            if not builder.is_prepared():
                raise FileNotFoundError(
                    f"TFDS dataset {name!r} is not prepared under {str(builder.data_dir)!r}; prepare it with "
                    f"`tfds build {name} --file_format=array_record` (this loader never downloads)"
                )
            self._data = tfds.data_source(name, split=split, data_dir=data_dir, download=False, decoders=decoders)
            info = builder.info
        self.info = info
        features = info.features
        feature_names = list(features.keys()) if hasattr(features, "keys") else []
        label_feature = features["label"] if "label" in feature_names else None
        # ClassLabel features carry names; Scalar/Tensor labels do not.
        self.class_names = list(label_feature.names) if getattr(label_feature, "names", None) else None

    @property
    def num_classes(self) -> int | None:
        """Number of classes when the label feature is a ClassLabel."""
        return len(self.class_names) if self.class_names is not None else None

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> Example:
        index = _check_index(index, len(self._data))
        record = self._data[index]
        if self.feature_map is not None:
            record = {out: record[src] for src, out in self.feature_map.items()}
        return {key: _to_numpy(value) for key, value in record.items()}

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, len={len(self)})"


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _to_numpy(item) for key, item in value.items()}
    if isinstance(value, bytes | str):
        return value
    array = np.asarray(value)
    # Labels as int32 (what jax uses by default); TFDS stores Scalar/ClassLabel as int64.
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    return array
