"""Video clip sources: class folders, Kinetics-style lists and CSVs, Something-Something v2, TFDS video tensors.

    source = zoo.data.get_source("videofolder:/data/ucf", split="train", num_frames=8)   # <root>/<split>/<class>/*.mp4
    source = zoo.data.get_source("videolist:/data/k400/train.csv", split="train", root="/data/k400/train")
    source = zoo.data.get_source("ssv2:/data/ssv2", split="validation", num_frames=16, num_clips=4)
    source = zoo.data.get_source("tfdsvideo:my_clips", split="train", data_dir="/data/tfds")
    example = source.sample(i, rng)   # {"video": uint8 (T, H, W, 3), "label": int32, "_skipped": int32}

Every source is random access (`len`, `source[i]`, `source.sample(i, rng)`) with `num_classes` and `class_names`.
`make_pipeline` calls `sample(i, example_rng(seed, epoch, i))`, so the frames of a training clip are a pure
function of (seed, epoch, i): a resumed pipeline decodes the same clips. Frame choice (`zoo.data.video_sampling`):
- train (default for split "train"): T segments, one random frame in each (TSN / ILA);
- eval: the segment centres; with `num_clips=K > 1` K clips, `"video"` of shape (K, T, H, W, 3).
Only the chosen frames are decoded (`zoo.data.video_io.read_frames`); `short_side=` scales them while converting.

A file that cannot be read (missing, truncated, corrupt: `VideoDecodeError`) is skipped: the example of the next
index (cyclically) is returned instead, `"_skipped"` says how many files were passed over for it, the source counts
the distinct bad files (`num_skipped`, `skipped_files`; per process) and logs each path once.
`DataIterator.num_skipped` sums `_skipped` over batches, which includes skips inside grain worker processes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.pipeline import SKIPPED_KEY
from zoo.data.sources import _check_index, list_class_folder
from zoo.data.video_io import VideoDecodeError, probe_video, read_frames
from zoo.data.video_sampling import MULTI_CLIP_MODES, multi_clip_indices, segment_indices

logger = logging.getLogger(__name__)

Example = dict[str, np.ndarray]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")
TRAIN_SPLITS = ("train",)
KINETICS_FILENAME = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"




class VideoClipSource:
    """Clips of T frames from a list of (video file, label).

    Args:
      files: video paths.
      labels: int label per file (-1 for unlabelled test sets).
      class_names: label names (index = label).
      num_frames: T, frames per clip (8 / 16 / 32 in ILA).
      train: random frame per segment (True) or segment centres (False).
      num_clips: test clips per video (eval only); > 1 gives "video" of shape (K, T, H, W, 3).
      multi_clip_mode: "uniform" (evenly interleaved clips) or "ila" (the official random multi-view draw).
      short_side: decode frames scaled to this short side (None keeps the coded size).
      validate: probe every file at construction (demux only) and drop the unreadable ones.
      video_key: output field of the clip.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str] | None,
        *,
        num_frames: int = 8,
        train: bool = False,
        num_clips: int = 1,
        multi_clip_mode: str = "uniform",
        short_side: int | None = None,
        validate: bool = False,
        video_key: str = "video",
    ):
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        if not files:
            raise ValueError("no video files")
        if train and num_clips != 1:
            raise ValueError("num_clips > 1 is a test protocol; use train=False")
        if multi_clip_mode not in MULTI_CLIP_MODES:
            raise ValueError(f"unknown multi_clip_mode {multi_clip_mode!r}; expected one of {MULTI_CLIP_MODES}")
        self.files = [str(path) for path in files]
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = list(class_names) if class_names is not None else None
        self.num_frames, self.train, self.num_clips = int(num_frames), bool(train), int(num_clips)
        self.multi_clip_mode, self.short_side, self.video_key = multi_clip_mode, short_side, video_key
        self._lock = threading.Lock()
        self._skipped: dict[str, str] = {}
        if validate:
            keep = [i for i, path in enumerate(self.files) if self._try_probe(path)]
            if not keep:
                raise ValueError("every video failed to open")
            self.files = [self.files[i] for i in keep]
            self.labels = self.labels[keep]

    # ---------------------------------------------------------------------------------------- bookkeeping
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_classes(self) -> int | None:
        """Number of classes, when the source knows its label names."""
        return len(self.class_names) if self.class_names is not None else None

    @property
    def num_skipped(self) -> int:
        """Distinct files that failed to read so far (in this process)."""
        with self._lock:
            return len(self._skipped)

    @property
    def skipped_files(self) -> dict[str, str]:
        """path -> reason, for the files that failed so far (in this process)."""
        with self._lock:
            return dict(self._skipped)

    def _record_skip(self, path: str, error: VideoDecodeError) -> None:
        with self._lock:
            first = path not in self._skipped
            self._skipped[path] = error.reason
        if first:
            logger.warning("skipping unreadable video %s (%s)", path, error.reason)

    def _try_probe(self, path: str) -> bool:
        try:
            probe_video(path)
            return True
        except VideoDecodeError as error:
            self._record_skip(path, error)
            return False

    # ------------------------------------------------------------------------------------------- sampling
    def frame_indices(self, num_frames: int, rng: np.random.Generator | None) -> np.ndarray:
        """(T,) or (K, T) frame indices of one example of a video with `num_frames` frames."""
        if self.num_clips > 1:
            if self.multi_clip_mode == "ila" and rng is None:
                raise ValueError("multi_clip_mode 'ila' draws random clips: use source.sample(index, rng)")
            return multi_clip_indices(num_frames, self.num_frames, self.num_clips, mode=self.multi_clip_mode, rng=rng)
        return segment_indices(num_frames, self.num_frames, rng if self.train else None)

    def load(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """The clip of file `index` (no skipping): uint8 (T, H, W, 3) or (K, T, H, W, 3)."""
        path = self.files[index]
        info = probe_video(path)
        indices = self.frame_indices(info.num_frames, rng)
        frames = read_frames(path, indices.reshape(-1), short_side=self.short_side, info=info)
        return frames.reshape((*indices.shape, *frames.shape[1:]))

    def sample(self, index: int, rng: np.random.Generator | None = None) -> Example:
        """Example `index` with frames chosen by `rng` (train) or fixed (eval); unreadable files are skipped."""
        index = _check_index(index, len(self.files))
        for offset in range(len(self.files)):
            candidate = (index + offset) % len(self.files)
            try:
                clip = self.load(candidate, rng)
            except VideoDecodeError as error:
                self._record_skip(self.files[candidate], error)
                continue
            return {self.video_key: clip, "label": self.labels[candidate], SKIPPED_KEY: np.int32(offset)}
        raise ValueError(f"every one of the {len(self.files)} videos failed to decode")

    def __getitem__(self, index: int) -> Example:
        # Without a generator: train sources take the segment centres (use `sample(index, rng)` to augment).
        return self.sample(index, None)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(len={len(self)}, classes={self.num_classes}, T={self.num_frames}, "
            f"train={self.train}, clips={self.num_clips})"
        )


def _is_train(split: str | None, train: bool | None) -> bool:
    return (split in TRAIN_SPLITS) if train is None else bool(train)


# ------------------------------------------------------------------------------------------ class folders
def list_video_folder(root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS):
    """(files, labels, class_names) of `root/<class_name>/**/<video>` in sorted order."""
    return list_class_folder(Path(root).expanduser(), extensions, "video", "<video>.mp4|avi|webm")


def video_folder(
    path: str | os.PathLike,
    split: str | None = "train",
    *,
    train: bool | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    **kwargs: Any,
) -> VideoClipSource:
    """`videofolder:<path>`: `<path>/<split>/<class>/<video>` (or `<path>/<class>/<video>` with split=None).

    Class names are the sorted sub-folder names. kwargs go to `VideoClipSource` (num_frames=, num_clips=, ...).
    """
    root = Path(path).expanduser()
    if split not in (None, "all"):
        root = root / split
        if not root.is_dir():
            raise FileNotFoundError(
                f"split folder {str(root)!r} not found; expected <root>/<split>/<class_name>/<video> "
                "(or pass split=None to read <root>/<class_name>/<video> directly)"
            )
    files, labels, class_names = list_video_folder(root, extensions)
    return VideoClipSource(files, labels, class_names, train=_is_train(split, train), **kwargs)


# ------------------------------------------------------------------------------------ annotation lists
def read_class_names(path: str | os.PathLike) -> list[str]:
    """Label names from a file: "id,name" CSV (ILA's labels/*.csv), a JSON {name: index} or [names], or one per line."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, Mapping):
            return [name for name, _ in sorted(data.items(), key=lambda item: int(item[1]))]
        return [str(name) for name in data]
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if rows and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header
        by_id = {int(row[0]): row[1].strip() for row in rows if row}
        return [by_id[i] for i in range(len(by_id))]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _resolve(root: Path | None, relative: str) -> str:
    return str(Path(relative) if root is None or os.path.isabs(relative) else root / relative)


def parse_video_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> tuple[list[str], list[int]]:
    """mmaction / ILA list file: one "relative/path.mp4 label" per line (the path may contain spaces)."""
    root = Path(root).expanduser() if root is not None else None
    files, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected '<relative path> <integer label>', got {line!r}")
        files.append(_resolve(root, parts[0]))
        labels.append(int(parts[1]))
    return files, labels


def parse_kinetics_csv(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    class_names: Sequence[str] | None = None,
    filename_template: str = KINETICS_FILENAME,
) -> tuple[list[str], list[int], list[str]]:
    """Kinetics CSV (label,youtube_id,time_start,time_end,split[,is_cc]) -> (files, labels, class_names).

    The file of a row is `<root>/<label>/<name>` when that exists, else `<root>/<name>`, with
    name = filename_template.format(youtube_id=, time_start=, time_end=, label=). Class names default to the sorted
    labels of the CSV (Kinetics' own order).
    """
    root = Path(root).expanduser() if root is not None else Path(path).parent
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"label", "youtube_id", "time_start", "time_end"} <= set(rows[0]):
        raise ValueError(f"{path}: expected the columns label,youtube_id,time_start,time_end, got {list(rows[0])}")
    names = list(class_names) if class_names is not None else sorted({row["label"] for row in rows})
    lookup = {name: index for index, name in enumerate(names)}
    files, labels = [], []
    for row in rows:
        if row["label"] not in lookup:
            raise ValueError(f"{path}: label {row['label']!r} not among the {len(names)} class names")
        name = filename_template.format(
            youtube_id=row["youtube_id"],
            time_start=int(float(row["time_start"])),
            time_end=int(float(row["time_end"])),
            label=row["label"],
        )
        nested = root / row["label"] / name
        files.append(str(nested if nested.exists() else root / name))
        labels.append(lookup[row["label"]])
    return files, labels, names


def video_list(
    path: str | os.PathLike,
    split: str | None = "train",
    *,
    root: str | os.PathLike | None = None,
    labels_file: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    train: bool | None = None,
    missing: str = "drop",
    filename_template: str = KINETICS_FILENAME,
    **kwargs: Any,
) -> VideoClipSource:
    """`videolist:<file>`: a Kinetics-style list ("path label" lines) or a Kinetics CSV (by the .csv suffix).

    Args:
      path: the annotation file of one split (the split name only picks train or eval sampling).
      root: folder the relative paths are under (default: the annotation file's folder for CSVs, as given for lists).
      labels_file / class_names: label names (e.g. ILA's labels/kinetics_400_labels.csv); lists default to "0".."K-1".
      missing: "drop" files that do not exist at construction (counted in `num_missing`), or "skip" them at read
        time like any unreadable file.
    """
    if missing not in ("drop", "skip"):
        raise ValueError(f"missing must be 'drop' or 'skip', got {missing!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} not found")
    if class_names is None and labels_file is not None:
        class_names = read_class_names(labels_file)
    if path.suffix == ".csv":
        files, labels, class_names = parse_kinetics_csv(
            path, root, class_names=class_names, filename_template=filename_template
        )
    else:
        files, labels = parse_video_list(path, root)
        if class_names is None and labels:
            class_names = [str(label) for label in range(max(labels) + 1)]
    num_listed = len(files)
    if missing == "drop":
        kept = [(file, label) for file, label in zip(files, labels, strict=True) if os.path.exists(file)]
        files, labels = [file for file, _ in kept], [label for _, label in kept]
        if not files:
            raise FileNotFoundError(f"none of the {num_listed} videos listed in {str(path)!r} exists (root={root})")
    source = VideoClipSource(files, labels, class_names, train=_is_train(split, train), **kwargs)
    source.num_missing = num_listed - len(files)
    return source


# ------------------------------------------------------------------------------------ Something-Something v2
SSV2_SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "validation": "something-something-v2-validation.json",
    "eval": "something-something-v2-validation.json",
    "val": "something-something-v2-validation.json",
    "test": "something-something-v2-test.json",
}


def ssv2_template_name(template: str) -> str:
    """An SSv2 annotation template -> its class name: the [something] placeholders lose their brackets."""
    return template.replace("[", "").replace("]", "")


def ssv2(
    path: str | os.PathLike,
    split: str | None = "train",
    *,
    annotation_file: str | os.PathLike | None = None,
    labels_file: str | os.PathLike | None = None,
    video_dir: str | os.PathLike | None = None,
    extension: str = ".webm",
    train: bool | None = None,
    **kwargs: Any,
) -> VideoClipSource:
    """`ssv2:<root>`: Something-Something v2 (174 classes) as distributed.

    Default layout: `<root>/labels/something-something-v2-labels.json` ({template: "index"}),
    `<root>/labels/something-something-v2-<split>.json` ([{"id", "template", "label", "placeholders"}]) and
    `<root>/20bn-something-something-v2/<id>.webm`. The class of a video is labels[template without brackets].
    The test split has no templates; its labels are -1.
    """
    root = Path(path).expanduser()
    split_name = split or "train"
    if annotation_file is None:
        if split_name not in SSV2_SPLIT_FILES:
            raise ValueError(f"unknown SSv2 split {split_name!r}; expected one of {sorted(SSV2_SPLIT_FILES)}")
        annotation_file = root / "labels" / SSV2_SPLIT_FILES[split_name]
    labels_file = root / "labels" / "something-something-v2-labels.json" if labels_file is None else labels_file
    video_dir = root / "20bn-something-something-v2" if video_dir is None else Path(video_dir)
    for required in (annotation_file, labels_file):
        if not Path(required).is_file():
            raise FileNotFoundError(f"SSv2 file {str(required)!r} not found (layout: see zoo.data.video_sources.ssv2)")
    template_to_index = {name: int(index) for name, index in json.loads(Path(labels_file).read_text()).items()}
    class_names = [name for name, _ in sorted(template_to_index.items(), key=lambda item: item[1])]
    files, labels = [], []
    for entry in json.loads(Path(annotation_file).read_text()):
        files.append(str(Path(video_dir) / f"{entry['id']}{extension}"))
        template = entry.get("template")
        if template is None:
            labels.append(-1)
            continue
        name = ssv2_template_name(template)
        if name not in template_to_index:
            raise ValueError(f"SSv2 video {entry['id']}: template {name!r} not in {labels_file}")
        labels.append(template_to_index[name])
    return VideoClipSource(files, labels, class_names, train=_is_train(split, train), **kwargs)


# ------------------------------------------------------------------------------------------------ TFDS
class TfdsVideoSource:
    """A prepared TFDS dataset whose video is a uint8 (N, H, W, 3) tensor feature, read with `tfds.data_source`.

    The whole stored video of a record is read (ArrayRecord holds it as one tensor), then T frames are chosen
    exactly as for files (segments; centres for eval; K clips). Use `tfds.features.Tensor` (or a Sequence of
    Tensor frames) for the video when preparing: TFDS's `Video` feature stores encoded frames that need
    TensorFlow to decode.

    Args:
      name / builder_dir / data_dir / split: as `TfdsSource` (never downloads or prepares).
      video_key, label_key: feature names.
      num_frames, train, num_clips, multi_clip_mode: as `VideoClipSource`.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        builder_dir: str | os.PathLike | None = None,
        video_key: str = "video",
        label_key: str = "label",
        num_frames: int = 8,
        train: bool | None = None,
        num_clips: int = 1,
        multi_clip_mode: str = "uniform",
    ):
        from zoo.data.sources import TfdsSource

        self.tfds = TfdsSource(name, split=split, data_dir=data_dir, builder_dir=builder_dir)
        self.video_key, self.label_key = video_key, label_key
        self.num_frames, self.num_clips, self.multi_clip_mode = int(num_frames), int(num_clips), multi_clip_mode
        self.train = _is_train(split.split("[")[0], train)
        self.class_names = self.tfds.class_names

    @property
    def num_classes(self) -> int | None:
        """Number of classes when the label is a ClassLabel."""
        return len(self.class_names) if self.class_names is not None else None

    def sample(self, index: int, rng: np.random.Generator | None = None) -> Example:
        """Example `index`: T frames of its stored video (random per segment with rng in train)."""
        record = self.tfds[index]
        video = np.asarray(record[self.video_key])
        if video.ndim != 4:
            raise ValueError(f"TFDS feature {self.video_key!r} must be (N, H, W, C) frames, got {video.shape}")
        if self.num_clips > 1:
            indices = multi_clip_indices(
                len(video), self.num_frames, self.num_clips, mode=self.multi_clip_mode, rng=rng
            )
        else:
            indices = segment_indices(len(video), self.num_frames, rng if self.train else None)
        out = {key: value for key, value in record.items() if key != self.video_key}
        out["video"] = np.ascontiguousarray(video[indices])
        if self.label_key != "label" and self.label_key in out:
            out["label"] = out.pop(self.label_key)
        return out

    def __getitem__(self, index: int) -> Example:
        return self.sample(index, None)

    def __len__(self) -> int:
        return len(self.tfds)

    def __repr__(self) -> str:
        return f"TfdsVideoSource({self.tfds.name!r}, len={len(self)}, T={self.num_frames}, train={self.train})"


def tfds_video(name: str, split: str | None = "train", **kwargs: Any) -> TfdsVideoSource:
    """`tfdsvideo:<name>`: `TfdsVideoSource(name, split=split, **kwargs)`."""
    return TfdsVideoSource(name, split=split or "train", **kwargs)


def register() -> None:
    """Register the prefixes "videofolder:", "videolist:", "ssv2:", "tfdsvideo:" (idempotent)."""
    from zoo.data.registry import register_prefix

    register_prefix("videofolder", video_folder)
    register_prefix("videolist", video_list, argument="annotation file")
    register_prefix("ssv2", ssv2, argument="root")
    register_prefix("tfdsvideo", tfds_video, argument="name")


register()
