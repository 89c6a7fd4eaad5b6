"""Which frames of a video make a clip: segment sampling (TSN / ILA), multi-clip test views, strided clips.

All functions return int64 frame indices in [0, num_frames) and draw randomness only from the generator passed
in, so a clip is a pure function of (video length, seed, epoch, index) under the pipeline's `example_rng`.

- `segment_indices(n, T, rng)`: the video is cut into T equal segments and one frame is drawn uniformly from each
  (train); with rng=None the centre of each segment is taken (test). Same boundaries as the official ILA code
  (`SampleFrames(frame_uniform=True)`, from SlowFast's SSv2 loader): segment i spans
  [round((n-1)/T * i), round((n-1)/T * (i+1))], both ends included, and the test frame is their integer midpoint.
- `multi_clip_indices(n, T, K)`: K test clips of T frames. "uniform" (default) places clip k at offset (k + 1/2)/K
  of every segment of length n/T, so the K clips interleave evenly and cover the video; "ila" reproduces the
  official multi-view test sampling (`SampleFrames(clip_len=1, num_clips=T, multiview=K)`, i.e. K independent
  TSN train draws: segment length n // T, a random offset in each), which needs an rng.
- `strided_indices(start, T, stride)`: T consecutive frames with a fixed stride (used by the direction/speed set).
"""

from __future__ import annotations

import numpy as np

MULTI_CLIP_MODES = ("uniform", "ila")


def segment_indices(num_frames: int, num_segments: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One frame per equal segment: random within the segment with `rng`, the segment centre without."""
    if num_frames <= 0 or num_segments <= 0:
        raise ValueError(f"need a positive frame count and segment count, got {num_frames}, {num_segments}")
    segment = float(num_frames - 1) / num_segments
    bounds = np.round(segment * np.arange(num_segments + 1)).astype(np.int64)  # numpy rounds half to even, as there
    starts, ends = bounds[:-1], bounds[1:]
    if rng is None:
        return (starts + ends) // 2
    return rng.integers(starts, ends + 1).astype(np.int64)


def multi_clip_indices(
    num_frames: int,
    num_segments: int,
    num_clips: int,
    *,
    mode: str = "uniform",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(num_clips, num_segments) frame indices of the test clips of one video (see the module docstring)."""
    if mode not in MULTI_CLIP_MODES:
        raise ValueError(f"unknown multi-clip mode {mode!r}; expected one of {MULTI_CLIP_MODES}")
    if num_frames <= 0 or num_segments <= 0 or num_clips <= 0:
        raise ValueError(f"need positive sizes, got frames={num_frames} segments={num_segments} clips={num_clips}")
    if mode == "uniform":
        segment = num_frames / num_segments
        offsets = (np.arange(num_clips)[:, None] + 0.5) / num_clips + np.arange(num_segments)[None, :]
        return np.minimum(np.floor(offsets * segment).astype(np.int64), num_frames - 1)
    if rng is None:
        raise ValueError("multi-clip mode 'ila' draws random offsets; pass rng")
    return np.stack([_tsn_train_offsets(num_frames, num_segments, rng) for _ in range(num_clips)])


def _tsn_train_offsets(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """mmaction `SampleFrames._get_train_clips` with clip_len=1 (the official multi-view test draw)."""
    average = num_frames // num_segments
    if average > 0:
        return np.arange(num_segments) * average + rng.integers(average, size=num_segments)
    if num_frames > num_segments:  # unreachable for clip_len=1 (kept for the same case analysis as mmaction)
        return np.sort(rng.integers(num_frames, size=num_segments))
    return np.round(np.arange(num_segments) * (num_frames / num_segments)).astype(np.int64)


def strided_indices(start: int, length: int, stride: int) -> np.ndarray:
    """start, start + stride, ..., `length` frames."""
    if length <= 0 or stride <= 0:
        raise ValueError(f"need a positive length and stride, got {length}, {stride}")
    return start + stride * np.arange(length, dtype=np.int64)
