"""Real video with per-person masks: OpenCV's `vtest.avi` (pedestrians, static camera) + background subtraction.

    source = zoo.data.get_source("vtest_person_masks", split="train")   # {"image": uint8 HxWx3, "mask": uint8 HxW}
    frames = read_video_frames(VTEST_PATH, count=20, downscale=2)       # the first 20 frames, (20, 288, 384, 3)
    clips = zoo.data.get_source("vtest_person_clips", split="train", clip_length=4)  # {"frames", "masks"} per person

`vtest.avi` ships in Debian's `opencv-doc` package (`apt-get install opencv-doc`; Apache-2.0 / BSD-3-Clause) and is
decoded with PyAV (`pip install av`). Masks (specs/offline_data.md 2e): the median background over every 10th frame,
|frame - background| > 40 (largest channel), a morphological open then close, hole filling, and connected components
of more than 300 full-resolution pixels; one example per (frame, person blob). Groups of people that overlap merge
into one blob, as in the spec. The frames and masks are cached as .npz under `$ZOO_CACHE_DIR` (default
`~/.cache/zoo`), so only the first build decodes the video. This module never imports models or the trainer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

VTEST_PATH = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def _require_video(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; vtest.avi ships in Debian's opencv-doc package (apt-get install opencv-doc), or pass "
            "path= to another copy"
        )
    return path


def _frames(path: str | os.PathLike, downscale: int):
    """Yield (index, uint8 RGB frame subsampled by `downscale`) for every frame of the video (PyAV)."""
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("decoding video needs PyAV: pip install av") from err
    with av.open(str(_require_video(path))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            yield index, frame.to_ndarray(format="rgb24")[::downscale, ::downscale]


def read_video_frames(path: str | os.PathLike = VTEST_PATH, *, count: int | None = None, start: int = 0,
                      step: int = 1, downscale: int = 1) -> np.ndarray:
    """Frames start, start + step, ... (at most `count`) as uint8 RGB (N, H, W, 3); decoding stops when done."""
    out = []
    for index, frame in _frames(path, downscale):
        if index >= start and (index - start) % step == 0:
            out.append(frame.copy())
            if count is not None and len(out) >= count:
                break
    return np.stack(out)


def person_masks(frame: np.ndarray, background: np.ndarray, *, threshold: float = 40.0,
                 min_area: int = 300) -> np.ndarray:
    """Connected person blobs of one frame as an int32 label map (0 = background, 1..K by decreasing area)."""
    from scipy import ndimage

    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=-1) > threshold
    structure = np.ones((3, 3), bool)
    foreground = ndimage.binary_opening(diff, structure)
    foreground = ndimage.binary_closing(foreground, structure, iterations=2)
    foreground = ndimage.binary_fill_holes(foreground)
    labels, count = ndimage.label(foreground)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = [k + 1 for k in np.argsort(-areas) if areas[k] > min_area]
    out = np.zeros_like(labels, dtype=np.int32)
    for new, old in enumerate(keep, start=1):
        out[labels == old] = new
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "zoo"))


def vtest_frames_and_masks(path: str | os.PathLike = VTEST_PATH, *, max_frames: int = 300, frame_step: int = 5,
                           downscale: int = 2, background_step: int = 10) -> dict[str, np.ndarray]:
    """{"frames": (F, H, W, 3) uint8, "labels": (F, H, W) int32 blob labels, "index": (F,) frame numbers}.

    Frames 0, frame_step, ... < max_frames; the background is the median over every `background_step`-th frame of
    the whole video. Cached on disk by (file size, arguments).
    """
    path = _require_video(path)
    key = hashlib.sha1(repr((str(path), path.stat().st_size, max_frames, frame_step, downscale,
                             background_step)).encode()).hexdigest()[:12]
    cache = _cache_dir() / f"vtest_masks_{key}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    frames, indices, background_frames = [], [], []
    for index, frame in _frames(path, downscale):
        if index % background_step == 0:
            background_frames.append(frame)
        if index < max_frames and index % frame_step == 0:
            frames.append(frame)
            indices.append(index)
    background = np.median(np.stack(background_frames), axis=0).astype(np.uint8)
    min_area = max(1, round(300 / downscale**2))
    labels = np.stack([person_masks(f, background, min_area=min_area) for f in frames])
    out = {"frames": np.stack(frames), "labels": labels, "index": np.asarray(indices, np.int32),
           "background": background}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **out)
    os.replace(tmp, cache)  # atomic: concurrent builders never read a partial file
    return out


class PersonMaskSource:
    """One example per (frame, person blob): {"image": uint8 (H, W, 3), "mask": uint8 (H, W), "frame": int32}."""

    def __init__(self, frames: np.ndarray, labels: np.ndarray, frame_numbers: np.ndarray):
        self.frames, self.labels, self.frame_numbers = frames, labels, frame_numbers
        self.examples = [(f, k) for f in range(len(frames)) for k in range(1, int(labels[f].max()) + 1)]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame, blob = self.examples[int(index)]
        return {"image": self.frames[frame], "mask": (self.labels[frame] == blob).astype(np.uint8),
                "frame": np.int32(self.frame_numbers[frame])}

    def __repr__(self) -> str:
        return f"PersonMaskSource(frames={len(self.frames)}, examples={len(self)}, size={self.frames.shape[1:3]})"


def vtest_person_masks(split: str | None = "train", *, path: str | os.PathLike = VTEST_PATH, max_frames: int = 300,
                       frame_step: int = 5, downscale: int = 2, eval_fraction: float = 0.2) -> PersonMaskSource:
    """Person masks of vtest.avi; split "train" (earlier frames), "eval"/"test" (the last `eval_fraction`), "all"."""
    data = vtest_frames_and_masks(path, max_frames=max_frames, frame_step=frame_step, downscale=downscale)
    count = len(data["frames"])
    cut = count - max(1, round(count * eval_fraction))
    if split in (None, "all"):
        part = slice(0, count)
    elif split == "train":
        part = slice(0, cut)
    elif split in ("eval", "test", "validation"):
        part = slice(cut, count)
    else:
        raise ValueError(f"vtest_person_masks split must be train, eval or all; got {split!r}")
    return PersonMaskSource(data["frames"][part], data["labels"][part], data["index"][part])


def link_blobs(labels: np.ndarray, start: int, blob: int, length: int, min_iou: float = 0.2) -> np.ndarray | None:
    """Follow blob `blob` of frame `start` through the next `length - 1` frames: each frame's blob is the one that
    overlaps the previous frame's mask most (IoU >= min_iou). Returns (length, H, W) bool masks, or None when the
    person is lost (an occlusion or a merge with another blob)."""
    masks = [labels[start] == blob]
    for frame in range(start + 1, start + length):
        previous, current = masks[-1], labels[frame]
        overlap = np.bincount(current[previous].ravel(), minlength=int(current.max()) + 1)[1:]
        if overlap.size == 0 or overlap.max() == 0:
            return None
        candidate = current == int(np.argmax(overlap)) + 1
        iou = (candidate & previous).sum() / max((candidate | previous).sum(), 1)
        if iou < min_iou:
            return None
        masks.append(candidate)
    return np.stack(masks)


class PersonClipSource:
    """One example per (start frame, person) whose blob can be followed for `clip_length` frames:
    {"frames": uint8 (T, H, W, 3), "masks": uint8 (T, H, W)} (multi-frame SAM2 training)."""

    def __init__(self, frames: np.ndarray, labels: np.ndarray, clip_length: int, min_iou: float = 0.2):
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1; got {clip_length}")
        self.frames, self.clip_length = frames, clip_length
        self.clips = []
        for start in range(len(frames) - clip_length + 1):
            for blob in range(1, int(labels[start].max()) + 1):
                masks = link_blobs(labels, start, blob, clip_length, min_iou)
                if masks is not None:
                    self.clips.append((start, np.packbits(masks, axis=-1)))
        self._width = frames.shape[2]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, packed = self.clips[int(index)]
        masks = np.unpackbits(packed, axis=-1, count=self._width).astype(np.uint8)
        return {"frames": self.frames[start:start + self.clip_length], "masks": masks}

    def __repr__(self) -> str:
        return (f"PersonClipSource(clips={len(self)}, clip_length={self.clip_length}, "
                f"size={self.frames.shape[1:3]})")


def vtest_person_clips(split: str | None = "train", *, clip_length: int = 4, path: str | os.PathLike = VTEST_PATH,
                       max_frames: int = 300, frame_step: int = 5, downscale: int = 2,
                       eval_fraction: float = 0.2) -> PersonClipSource:
    """Clips of `clip_length` frames following one person of vtest.avi (the train/eval split of
    `vtest_person_masks`, by frame; clips never cross it)."""
    data = vtest_frames_and_masks(path, max_frames=max_frames, frame_step=frame_step, downscale=downscale)
    count = len(data["frames"])
    cut = count - max(1, round(count * eval_fraction))
    parts = {"train": slice(0, cut), "eval": slice(cut, count), "test": slice(cut, count),
             "validation": slice(cut, count), "all": slice(0, count), None: slice(0, count)}
    if split not in parts:
        raise ValueError(f"vtest_person_clips split must be train, eval or all; got {split!r}")
    return PersonClipSource(data["frames"][parts[split]], data["labels"][parts[split]], clip_length)


def register() -> None:
    """Register the sources "vtest_person_masks" and "vtest_person_clips" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_source

    # overwrite=True: importing the module again (a reload) re-registers the same factories instead of failing.
    register_source("vtest_person_masks", vtest_person_masks, overwrite=True)
    register_source("vtest_person_clips", vtest_person_clips, overwrite=True)


register()
