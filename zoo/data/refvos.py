"""Referring video object segmentation data: Ref-YouTube-VOS, MeViS and Ref-DAVIS17 (SAMWISE, ReferFormer layouts).

    source = zoo.data.get_source("ref_youtube_vos:/data/ref-youtube-vos", split="train", num_frames=8, size=1024)
    source = zoo.data.get_source("mevis:/data/MeViS_release", split="train")             # global sampling
    source = zoo.data.get_source("ref_davis17:/data/ref-davis", split="valid")           # whole videos
    example = source.sample(i, rng)    # or source[i] (a fixed rng per index)
    # {"frames": uint8 (T, S, S, 3), "masks": uint8 (T, S, S) of the referred object(s), "valid_region": bool (S, S),
    #  "object_present": bool (T,), "expression": str, "video_id": str, "exp_id": str, "frame_ids": int32 (T,)
    #  (positions in the video's sorted frame list), "frame_names": str (T,), "size": int32 (2,) resized (h, w)
    #  before padding, "orig_size": int32 (2,)}

RefCOCO-style images + expressions (1-frame clips) are in `zoo.data.refvos_refcoco`, the embedded real set
("vtest_referring": people of vtest.avi with generated expressions) in `zoo.data.refvos_embedded`; the samplers,
resize + pad and the COCO RLE codec in `zoo.data.refvos_clips` (re-exported here).

Layouts (what the official SAMWISE / ReferFormer code reads):
- Ref-YouTube-VOS: `<root>/<split>/JPEGImages/<video>/<frame>.jpg`, `<root>/<split>/Annotations/<video>/<frame>.png`
  (palette PNGs whose pixel values are object ids), `<root>/<split>/meta.json` (`videos/<video>/objects/<id>`), and
  `<root>/meta_expressions/<split>/meta_expressions.json` (`videos/<video>/{frames, expressions/<exp_id>/{exp,
  obj_id}}`). The "valid" split has no Annotations (scored on the server): its examples carry no "masks"; like the
  official inference, the videos of `meta_expressions/test/meta_expressions.json` are dropped from "valid".
- MeViS: `<root>/<split>/JPEGImages/<video>/<frame>.jpg`, `<root>/<split>/meta_expressions.json` (`obj_id` and
  `anno_id` are lists: one expression may refer to several objects; the mask is their union) and
  `<root>/<split>/mask_dict.json` (`anno_id -> [COCO RLE or null per frame position]`; absent for "valid").
- Ref-DAVIS17: either the Ref-YouTube-VOS layout made by the official `convert_davis_to_ytvos.py` (splits "train" /
  "valid"), or the raw download: `<root>/DAVIS/JPEGImages/480p/<video>`, `<root>/DAVIS/Annotations_unsupervised/480p`,
  `<root>/DAVIS/ImageSets/2017/{train,val}.txt` and `<root>/davis_text_annotations/Davis17_annot{1,2}[_full_video]
  .txt`, read as the converter does: per object (in string order of its id) the four expressions annotator-1 first-
  frame, annotator-1 full-video, annotator-2 first-frame, annotator-2 full-video get exp ids 4k..4k+3 (annotator =
  exp_id % 4 in the official evaluation), annotator-2 files are latin-1, and three misspelt video names are fixed.

Examples (as the official datasets): one per (video, expression, anchor) with anchors 0, T, 2T, ... < video length,
for the training samplers; captions are lower-cased with whitespace collapsed. Clip sampling (`sampling=`):
- "local" (Ref-YTVOS, `FrameSampler.sample_local_frames`): up to T//2 distinct frames from [anchor - T, anchor) and
  up to T//2 from [anchor, anchor + T) (as many as the video allows: min(anchor, T//2) before, min(len - anchor - 1,
  T//2) after), the anchor if it is still missing, then distinct frames from the pool [anchor - 2T, anchor + 2T);
  only a video shorter than T repeats frames (random frames of the whole video). Sorted. The official pool step
  retries random draws up to 3x the pool size and could in principle give up early; here it draws without replacement
  from the unused pool frames, which is what the retry loop converges to.
- "global" (MeViS, `sample_global_frames`): the anchor, anchor - U{1..3} and anchor + U{1..3} (clamped to the video,
  so they may repeat at the ends), then T - 3 distinct frames outside (min, max) of those (the max itself included,
  as in the official slice), or from the whole video when fewer remain, or with repeats for very short videos.
  Sorted. For T = 2 the official sampler returns 3 indices and reads the first 2; so does this one.
- "consecutive": frames anchor .. anchor + T - 1 (clipped at the end, so the last clip may be shorter; eval).
- "all": one example per (video, expression) with every frame (streaming evaluation, Ref-DAVIS17).
Training sources (local / global) draw another example with the rng when no sampled frame shows the object, as the
official `instance_check` loop does (`require_object=False` turns that off).

Resizing (`size=`, default 1024; None keeps the native size): the official train transform `RandomResize([size],
max_size=size)` (short side to `size` unless the long side would pass `size`, which it does for every landscape
frame: long side = size; torchvision's integer rounding), frames bilinear (PIL), masks nearest (PyTorch's legacy
nearest, src = floor(dst * in / out)), then zero padding at the bottom and right to size x size (what SAMWISE's
`preprocess` does); "valid_region" marks the unpadded pixels. `resize_and_pad` / `ResizePad` do the same for any clip.

A missing folder, frame, mask or expression file is a `FileNotFoundError` naming the file; malformed JSON content is a
`RefVOSFormatError` naming the file and the entry. This module never imports models or the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.data.refvos_clips import (  # re-exported: the clip pieces are part of this module's API
    RefVOSFormatError,
    ResizePad,
    consecutive_frames,
    resize_and_pad,
    resized_size,
    rle_decode,
    rle_encode,
    sample_global_frames,
    sample_local_frames,
)
from zoo.data.sources import _check_index, load_image_rgb

Example = dict[str, Any]
SAMPLINGS = ("local", "global", "consecutive", "all")
__all__ = [
    "SAMPLINGS",
    "PaletteMasks",
    "RefExpression",
    "RefVOSFormatError",
    "RefVideo",
    "ReferringVideoSource",
    "ResizePad",
    "RleMasks",
    "clean_caption",
    "consecutive_frames",
    "mevis",
    "read_davis_expressions",
    "ref_davis17",
    "ref_youtube_vos",
    "resize_and_pad",
    "resized_size",
    "rle_decode",
    "rle_encode",
    "sample_global_frames",
    "sample_local_frames",
]


# ------------------------------------------------------------------------------------------------ records
@dataclasses.dataclass(frozen=True)
class RefVideo:
    """One video: id, sorted frame names and the folder of its `<frame>.jpg` files."""

    video_id: str
    frames: tuple[str, ...]
    frame_dir: Path
    extension: str = ".jpg"

    def frame_path(self, position: int) -> Path:
        """Path of the frame at `position` of the sorted frame list."""
        return self.frame_dir / f"{self.frames[position]}{self.extension}"


@dataclasses.dataclass(frozen=True)
class RefExpression:
    """One referring expression of video `video` (an index into the source's videos) and the ids it refers to."""

    video: int
    exp_id: str
    text: str
    targets: tuple[Any, ...]


def clean_caption(text: str) -> str:
    """The official caption clean-up: lower case, whitespace runs collapsed."""
    return " ".join(str(text).lower().split())


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise RefVOSFormatError(f"{str(path)!r} is not valid JSON ({err})") from err


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(path)!r} not found")
    return path


# ------------------------------------------------------------------------------------------------ mask readers
class PaletteMasks:
    """Masks from `<annotations>/<video>/<frame>.png` palette PNGs: pixels equal to one of the target object ids."""

    def __init__(self, annotation_dir: Path):
        self.annotation_dir = Path(annotation_dir)

    def read(self, video: RefVideo, position: int, targets: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
        """Bool (H, W) union of the target objects at one frame."""
        path = self.annotation_dir / video.video_id / f"{video.frames[position]}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"mask {str(path)!r} not found (video {video.video_id!r}, frame {video.frames[position]!r})"
            )
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16"):
                raise RefVOSFormatError(
                    f"mask {str(path)!r} has mode {image.mode}; expected a palette (P) or "
                    "grey-level PNG whose values are object ids"
                )
            ids = np.asarray(image)
        if ids.shape != shape:
            raise RefVOSFormatError(f"mask {str(path)!r} is {ids.shape}, its frame {shape}")
        return np.isin(ids, np.asarray([int(t) for t in targets], ids.dtype))


class RleMasks:
    """MeViS masks: `mask_dict.json` (anno_id -> per-frame COCO RLE or null), loaded on first use per process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MeViS mask file {str(self.path)!r} not found")
        self._masks: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # grain workers re-read the (large) JSON themselves
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self._masks, self._lock = state["path"], None, threading.Lock()

    def _table(self) -> dict[str, Any]:
        with self._lock:
            if self._masks is None:
                self._masks = _load_json(self.path, "MeViS mask file")
        return self._masks

    def read(self, video: RefVideo, position: int, targets: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
        """Bool (H, W) union of the target annotations at one frame (null RLE = object absent)."""
        table, out = self._table(), np.zeros(shape, bool)
        for anno_id in targets:
            if str(anno_id) not in table:
                raise RefVOSFormatError(
                    f"anno_id {anno_id!r} (video {video.video_id!r}) missing from {str(self.path)!r}"
                )
            per_frame = table[str(anno_id)]
            if position >= len(per_frame):
                raise RefVOSFormatError(
                    f"{str(self.path)!r}: anno_id {anno_id!r} has {len(per_frame)} frames, "
                    f"video {video.video_id!r} needs frame {position}"
                )
            if per_frame[position] is not None:
                mask = rle_decode(per_frame[position])
                if mask.shape != shape:
                    raise RefVOSFormatError(
                        f"{str(self.path)!r}: anno_id {anno_id!r} frame {position} is {mask.shape}, the frame {shape}"
                    )
                out |= mask.astype(bool)
        return out


# ------------------------------------------------------------------------------------------------ the source
class ReferringVideoSource:
    """Clips of referred objects: one example per (expression, anchor) (module docstring for keys and sampling).

    Args:
      videos, expressions: the records (`RefVideo`, `RefExpression`).
      masks: a mask reader (`PaletteMasks`, `RleMasks`) or None for sets without ground truth.
      num_frames: T.
      sampling: "local", "global", "consecutive" or "all".
      size: resize + pad size (None: native frames, which differ between videos).
      require_object: redraw (with the rng) an example whose sampled frames never show the object.
      name: for messages.
    """

    def __init__(
        self,
        videos: Sequence[RefVideo],
        expressions: Sequence[RefExpression],
        masks: Any | None,
        *,
        num_frames: int = 8,
        sampling: str = "local",
        size: int | None = 1024,
        require_object: bool | None = None,
        name: str = "referring VOS",
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1; got {num_frames}")
        self.videos, self.expressions, self.masks = list(videos), list(expressions), masks
        self.num_frames, self.sampling, self.size, self.name = int(num_frames), sampling, size, name
        self.require_object = (
            (masks is not None and sampling in ("local", "global")) if require_object is None else bool(require_object)
        )
        self.entries: list[tuple[int, int]] = []
        for e, expression in enumerate(self.expressions):
            length = len(self.videos[expression.video].frames)
            if sampling == "all":
                self.entries.append((e, 0))
            else:
                self.entries.extend((e, anchor) for anchor in range(0, length, self.num_frames))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Example:
        return self.sample(
            index, np.random.default_rng(np.random.SeedSequence([_check_index(index, len(self)), 0xC11B]))
        )

    def positions(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The frame positions example `index` reads (the sampling rule; rng used by local / global)."""
        expression, anchor = self.entries[_check_index(index, len(self))]
        length = len(self.videos[self.expressions[expression].video].frames)
        if self.sampling == "local":
            return sample_local_frames(anchor, length, self.num_frames, rng)
        if self.sampling == "global":
            return sample_global_frames(anchor, length, self.num_frames, rng)
        if self.sampling == "consecutive":
            return consecutive_frames(anchor, length, self.num_frames)
        return np.arange(length, dtype=np.int32)

    def sample(self, index: int, rng: np.random.Generator) -> Example:
        """Example `index` with its frames drawn by `rng` (the pipeline passes `example_rng(seed, epoch, index)`)."""
        index = _check_index(index, len(self))
        for _ in range(100):
            example = self._read(index, self.positions(index, rng))
            if not self.require_object or example["object_present"].any():
                break
            index = int(rng.integers(len(self)))
        else:
            raise RefVOSFormatError(f"{self.name}: 100 draws found no clip showing its object; are the masks empty?")
        if self.size is not None:
            example.update(resize_and_pad(example["frames"], example.get("masks"), self.size))
        return example

    def _read(self, index: int, positions: np.ndarray) -> Example:
        expression = self.expressions[self.entries[index][0]]
        video = self.videos[expression.video]
        frames = []
        for position in positions:
            path = video.frame_path(int(position))
            if not path.is_file():
                raise FileNotFoundError(
                    f"frame {str(path)!r} not found (video {video.video_id!r} lists frame "
                    f"{video.frames[int(position)]!r})"
                )
            frames.append(load_image_rgb(path))
        if len({f.shape for f in frames}) != 1:
            raise RefVOSFormatError(
                f"frames of video {video.video_id!r} differ in size: {sorted({f.shape for f in frames})}"
            )
        example: Example = {
            "frames": np.stack(frames),
            "expression": np.str_(expression.text),
            "video_id": np.str_(video.video_id),
            "exp_id": np.str_(expression.exp_id),
            "frame_ids": positions.astype(np.int32),
            "frame_names": np.array([video.frames[int(p)] for p in positions]),
        }
        if self.masks is not None:
            shape = frames[0].shape[:2]
            masks = np.stack([self.masks.read(video, int(p), expression.targets, shape) for p in positions])
            example["masks"] = masks.astype(np.uint8)
            example["object_present"] = masks.any(axis=(1, 2))
        else:
            example["object_present"] = np.zeros(len(positions), bool)
        return example

    def __repr__(self) -> str:
        return (
            f"ReferringVideoSource({self.name}: videos={len(self.videos)}, expressions={len(self.expressions)}, "
            f"examples={len(self)}, T={self.num_frames}, sampling={self.sampling!r}, size={self.size})"
        )


# ------------------------------------------------------------------------------------------------ readers
def _split_name(split: str | None, default: str) -> str:
    split = default if split in (None, "all") else split
    return {"val": "valid", "validation": "valid", "eval": "valid"}.get(split, split)


def _source(
    dataset: str,
    split: str,
    train_sampling: str,
    videos: list[RefVideo],
    expressions: list[RefExpression],
    masks: Any | None,
    num_frames: int,
    sampling: str | None,
    size: int | None,
    require_object: bool | None,
) -> ReferringVideoSource:
    """The factories' source, named "<dataset> <split>"; `sampling` None: `train_sampling` for "train", else "all"."""
    return ReferringVideoSource(
        videos,
        expressions,
        masks,
        num_frames=num_frames,
        sampling=sampling or (train_sampling if split == "train" else "all"),
        size=size,
        require_object=require_object,
        name=f"{dataset} {split}",
    )


def _videos_and_expressions(
    meta_path: Path,
    frame_root: Path,
    *,
    multi: bool,
    skip: set[str] = frozenset(),
    objects: Mapping[str, Any] | None = None,
) -> tuple[list[RefVideo], list[RefExpression]]:
    """Parse a `meta_expressions.json` ({"videos": {vid: {"frames": [...], "expressions": {id: {...}}}}})."""
    data = _load_json(meta_path, "expression file")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise RefVOSFormatError(f"{str(meta_path)!r} must hold {{'videos': {{video_id: ...}}}}")
    videos, expressions = [], []
    for video_id, entry in data["videos"].items():
        if video_id in skip:
            continue
        try:
            frames, exps = entry["frames"], entry["expressions"]
        except (KeyError, TypeError) as err:
            raise RefVOSFormatError(f"{str(meta_path)!r}: video {video_id!r} needs 'frames' and 'expressions'") from err
        if not frames:
            raise RefVOSFormatError(f"{str(meta_path)!r}: video {video_id!r} lists no frames")
        frame_dir = _require_dir(frame_root / video_id, f"frames of video {video_id!r}:")
        video_index = len(videos)
        videos.append(RefVideo(video_id, tuple(sorted(str(f) for f in frames)), frame_dir))
        for exp_id, exp in exps.items():
            if not isinstance(exp, dict) or "exp" not in exp:
                raise RefVOSFormatError(f"{str(meta_path)!r}: video {video_id!r} expression {exp_id!r} has no 'exp'")
            if multi:  # MeViS: masks by anno_id (a list), obj_id only informative
                targets = tuple(str(a) for a in exp.get("anno_id", ()))
            else:
                targets = () if "obj_id" not in exp else (int(exp["obj_id"]),)
                if (
                    objects is not None
                    and targets
                    and str(targets[0]) not in objects.get(video_id, {}).get("objects", {})
                ):
                    raise RefVOSFormatError(
                        f"{str(meta_path)!r}: video {video_id!r} expression {exp_id!r} refers "
                        f"to object {targets[0]}, which meta.json does not list"
                    )
            expressions.append(RefExpression(video_index, str(exp_id), clean_caption(exp["exp"]), targets))
    return videos, expressions


def ref_youtube_vos(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    num_frames: int = 8,
    sampling: str | None = None,
    size: int | None = 1024,
    with_masks: bool | None = None,
    require_object: bool | None = None,
) -> ReferringVideoSource:
    """Ref-YouTube-VOS (module docstring): split "train" (local sampling) or "valid" (whole videos, no masks).

    with_masks: None reads masks when `<root>/<split>/Annotations` exists; True makes its absence an error.
    """
    root = _require_dir(Path(root).expanduser(), "Ref-YouTube-VOS root")
    split = _split_name(split, "train")
    split_dir = _require_dir(root / split, f"Ref-YouTube-VOS split {split!r}:")
    frame_root = _require_dir(split_dir / "JPEGImages", "Ref-YouTube-VOS")
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    skip: set[str] = set()
    test_meta = root / "meta_expressions" / "test" / "meta_expressions.json"
    if split == "valid" and test_meta.is_file():  # the competition's valid file also lists the test videos
        skip = set(_load_json(test_meta, "expression file")["videos"])
    objects = None
    if (split_dir / "meta.json").is_file():
        objects = _load_json(split_dir / "meta.json", "object file").get("videos", {})
    elif split == "train":
        raise FileNotFoundError(
            f"object file {str(split_dir / 'meta.json')!r} not found (Ref-YouTube-VOS train "
            "needs it: videos/<video>/objects/<id>/category)"
        )
    videos, expressions = _videos_and_expressions(meta_path, frame_root, multi=False, skip=skip, objects=objects)
    masks = _palette_masks(split_dir / "Annotations", with_masks)
    if masks is not None and any(not e.targets for e in expressions):
        raise RefVOSFormatError(f"{str(meta_path)!r}: expressions without 'obj_id' cannot be matched to masks")
    return _source(
        "Ref-YouTube-VOS", split, "local", videos, expressions, masks, num_frames, sampling, size, require_object
    )


def _palette_masks(annotation_dir: Path, with_masks: bool | None) -> PaletteMasks | None:
    if with_masks is False:
        return None
    if not annotation_dir.is_dir():
        if with_masks:
            raise FileNotFoundError(f"mask folder {str(annotation_dir)!r} not found")
        return None
    return PaletteMasks(annotation_dir)


def mevis(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    num_frames: int = 8,
    sampling: str | None = None,
    size: int | None = 1024,
    with_masks: bool | None = None,
    require_object: bool | None = None,
) -> ReferringVideoSource:
    """MeViS (module docstring): splits "train" (global sampling), "valid_u" and "valid" (whole videos)."""
    root = _require_dir(Path(root).expanduser(), "MeViS root")
    split = split if split not in (None, "all") else "train"
    split_dir = _require_dir(root / split, f"MeViS split {split!r}:")
    frame_root = _require_dir(split_dir / "JPEGImages", "MeViS")
    videos, expressions = _videos_and_expressions(split_dir / "meta_expressions.json", frame_root, multi=True)
    mask_path = split_dir / "mask_dict.json"
    masks = None
    if with_masks or (with_masks is None and mask_path.is_file()):
        masks = RleMasks(mask_path)
        empty = [e.exp_id for e in expressions if not e.targets]
        if empty:
            raise RefVOSFormatError(
                f"{str(split_dir / 'meta_expressions.json')!r}: expressions {empty[:5]} have no anno_id"
            )
    return _source("MeViS", split, "global", videos, expressions, masks, num_frames, sampling, size, require_object)


_DAVIS_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
_DAVIS_TEXT_FILES = (
    ("Davis17_annot1.txt", "utf-8"),
    ("Davis17_annot1_full_video.txt", "utf-8"),
    ("Davis17_annot2.txt", "latin-1"),
    ("Davis17_annot2_full_video.txt", "latin-1"),
)


def read_davis_expressions(path: str | os.PathLike, encoding: str = "utf-8") -> dict[str, list[tuple[str, str]]]:
    """One Ref-DAVIS text file (`<video> <obj_id> "<expression>"` per line) -> video -> [(obj_id, text)] sorted by
    obj_id as a string (what the official converter does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ref-DAVIS expression file {str(path)!r} not found")
    videos: dict[str, list[tuple[str, str]]] = {}
    with open(path, encoding=encoding) as f:
        for number, line in enumerate(f, 1):
            parts = line.strip().split()
            if not parts:
                continue
            if len(parts) < 3:
                raise RefVOSFormatError(f"{str(path)!r} line {number}: expected '<video> <obj_id> \"<expression>\"'")
            video = _DAVIS_NAME_FIXES.get(parts[0], parts[0])
            videos.setdefault(video, []).append((parts[1], " ".join(parts[2:])[1:-1]))
    return {video: sorted(items, key=lambda item: item[0]) for video, items in videos.items()}


def _raw_davis(root: Path, split: str) -> tuple[list[RefVideo], list[RefExpression], PaletteMasks]:
    davis = _require_dir(root / "DAVIS", "DAVIS")
    list_file = davis / "ImageSets" / "2017" / ("train.txt" if split == "train" else "val.txt")
    if not list_file.is_file():
        raise FileNotFoundError(f"DAVIS split list {str(list_file)!r} not found")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    text_dir = _require_dir(root / "davis_text_annotations", "Ref-DAVIS text annotation")
    annotations = [read_davis_expressions(text_dir / name, encoding) for name, encoding in _DAVIS_TEXT_FILES]
    frame_root = _require_dir(davis / "JPEGImages" / "480p", "DAVIS")
    mask_root = _require_dir(davis / "Annotations_unsupervised" / "480p", "DAVIS")
    videos, expressions = [], []
    for name in names:
        frame_dir = _require_dir(frame_root / name, f"frames of video {name!r}:")
        frames = tuple(sorted(p.stem for p in frame_dir.glob("*.jpg")))
        if not frames:
            raise FileNotFoundError(f"no .jpg frames in {str(frame_dir)!r}")
        missing = [text for text, annotation in zip(_DAVIS_TEXT_FILES, annotations) if name not in annotation]
        if missing:
            raise RefVOSFormatError(f"video {name!r} has no expressions in {[m[0] for m in missing]}")
        videos.append(RefVideo(name, frames, frame_dir))
        exp_id = 0
        for per_annotator in zip(*(annotation[name] for annotation in annotations)):
            for obj_id, text in per_annotator:  # annot1 first, annot1 full, annot2 first, annot2 full
                expressions.append(RefExpression(len(videos) - 1, str(exp_id), clean_caption(text), (int(obj_id),)))
                exp_id += 1
    return videos, expressions, PaletteMasks(mask_root)


def ref_davis17(
    root: str | os.PathLike,
    split: str | None = "valid",
    *,
    num_frames: int = 8,
    sampling: str | None = None,
    size: int | None = 1024,
    require_object: bool | None = None,
) -> ReferringVideoSource:
    """Ref-DAVIS17 (module docstring), converted or raw layout; "valid" (whole videos: the zero-shot evaluation) or
    "train" (global sampling, as the official `DAVIS17Dataset`)."""
    root = _require_dir(Path(root).expanduser(), "Ref-DAVIS17 root")
    split = _split_name(split, "valid")
    if (root / "meta_expressions").is_dir():
        split_dir = _require_dir(root / split, f"Ref-DAVIS17 split {split!r}:")
        objects = _load_json(split_dir / "meta.json", "object file").get("videos", {})
        videos, expressions = _videos_and_expressions(
            root / "meta_expressions" / split / "meta_expressions.json",
            _require_dir(split_dir / "JPEGImages", "Ref-DAVIS17"),
            multi=False,
            objects=objects,
        )
        masks = _palette_masks(split_dir / "Annotations", True)
    else:
        videos, expressions, masks = _raw_davis(root, split)
    return _source(
        "Ref-DAVIS17", split, "global", videos, expressions, masks, num_frames, sampling, size, require_object
    )


def register() -> None:
    """Register the prefixes "ref_youtube_vos:", "mevis:" and "ref_davis17:" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_prefix

    sources: dict[str, Callable[..., ReferringVideoSource]] = {
        "ref_youtube_vos": ref_youtube_vos,
        "mevis": mevis,
        "ref_davis17": ref_davis17,
    }
    for prefix, factory in sources.items():
        register_prefix(prefix, factory, argument="root")


register()
