"""Clip-level pieces of the referring-VOS data (`zoo.data.refvos`): the official frame samplers, the resize + pad
of the SAMWISE training transform, and a COCO RLE codec (MeViS masks, RefCOCO crowds) that needs no pycocotools.

The rules are described in `zoo.data.refvos`'s docstring. `rle_decode` / `rle_encode` read and write pycocotools'
compressed strings (checked against pycocotools 2.0.11 in tests/zoo/test_refvos_data.py) and uncompressed counts.
This module never imports models or the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zoo.imaging import resize_and_pad_frames, resized_size  # noqa: F401 (resized_size: public here too)

Example = dict[str, Any]


class RefVOSFormatError(ValueError):
    """A referring-VOS annotation file whose content is malformed (the message names the file and the entry)."""


# ------------------------------------------------------------------------------------------------ clip sampling
def _distinct(rng: np.random.Generator, population: Sequence[int], count: int) -> list[int]:
    """`count` distinct members of `population` (Python's `random.sample`)."""
    if count <= 0:
        return []
    picks = rng.choice(len(population), size=count, replace=False)
    return [int(population[i]) for i in picks]


def sample_local_frames(anchor: int, video_length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Ref-YTVOS local sampling around `anchor` (module docstring): sorted int32 frame positions, shape (T,)."""
    _check_sampling_args(anchor, video_length, num_frames)
    before = _distinct(rng, range(max(anchor - num_frames, 0), anchor), min(anchor, num_frames // 2))
    after = _distinct(
        rng, range(anchor, min(anchor + num_frames, video_length)), min(video_length - anchor - 1, num_frames // 2)
    )
    picked = before + after
    if len(picked) < num_frames and anchor not in picked:
        picked.append(anchor)
    if len(picked) < num_frames:
        pool = [
            i
            for i in range(max(0, anchor - 2 * num_frames), min(video_length, anchor + 2 * num_frames))
            if i not in picked
        ]
        picked += _distinct(rng, pool, min(len(pool), num_frames - len(picked)))
        while len(picked) < num_frames:  # a video shorter than T: the official fallback repeats random frames
            picked.append(int(rng.integers(video_length)))
    return np.sort(np.asarray(picked, np.int32))


def sample_global_frames(anchor: int, video_length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """MeViS global sampling (module docstring): sorted int32 frame positions, shape (T,)."""
    _check_sampling_args(anchor, video_length, num_frames)
    picked = [anchor]
    if num_frames != 1:
        before, after = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        picked += [max(0, anchor - before), min(video_length - 1, anchor + after)]
        if num_frames > 3:
            outside = list(range(min(picked))) + list(range(max(picked), video_length))
            count = num_frames - len(picked)
            if len(outside) > count:
                picked += _distinct(rng, outside, count)
            elif video_length >= count:
                picked += _distinct(rng, range(video_length), count)
            else:
                while len(picked) < num_frames:
                    picked.append(int(rng.integers(video_length)))
    # T = 2 gives three indices; the official loader reads the first T of the sorted list.
    return np.sort(np.asarray(picked, np.int32))[:num_frames]


def consecutive_frames(anchor: int, video_length: int, num_frames: int) -> np.ndarray:
    """Frames anchor .. anchor + T - 1, clipped at the end of the video (int32)."""
    _check_sampling_args(anchor, video_length, num_frames)
    return np.arange(anchor, min(anchor + num_frames, video_length), dtype=np.int32)


def _check_sampling_args(anchor: int, video_length: int, num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if not 0 <= anchor < video_length:
        raise ValueError(f"anchor frame {anchor} outside a video of {video_length} frames")


# ------------------------------------------------------------------------------------------------ resize + pad
def _nearest_indices(out_length: int, in_length: int) -> np.ndarray:
    # PyTorch's legacy "nearest": src = floor(dst * in / out), in float32 as its kernel computes the scale.
    scale = np.float32(in_length) / np.float32(out_length)
    return np.minimum(np.floor(np.arange(out_length, dtype=np.float32) * scale).astype(np.int64), in_length - 1)


def resize_and_pad(frames: np.ndarray, masks: np.ndarray | None, size: int) -> dict[str, np.ndarray]:
    """Resize a clip as the official training transform and zero-pad it to (size, size) at the bottom right.

    frames: uint8 (T, H, W, 3); masks: (T, H, W) or None. Returns {"frames", "masks" (uint8, if given),
    "valid_region" bool (size, size), "size" int32 (h, w) after resizing, "orig_size" int32 (H, W)}.
    """
    frames = np.asarray(frames)
    out_frames, (new_h, new_w) = resize_and_pad_frames(frames, size)
    height, width = frames.shape[1:3]
    valid = np.zeros((size, size), bool)
    valid[:new_h, :new_w] = True
    out = {
        "frames": out_frames,
        "valid_region": valid,
        "size": np.array([new_h, new_w], np.int32),
        "orig_size": np.array([height, width], np.int32),
    }
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != frames.shape[:3]:
            raise ValueError(f"masks {masks.shape} do not match frames {frames.shape[:3]}")
        rows, cols = _nearest_indices(new_h, height), _nearest_indices(new_w, width)
        out_masks = np.zeros((len(masks), size, size), np.uint8)
        out_masks[:, :new_h, :new_w] = (masks[:, rows][:, :, cols] > 0).astype(np.uint8)
        out["masks"] = out_masks
    return out


class ResizePad:
    """Pipeline transform `(example, rng) -> example`: `resize_and_pad` of "frames" / "masks" to `size`."""

    def __init__(self, size: int = 1024):
        self.size = int(size)

    def __call__(self, example: Mapping[str, Any], rng: np.random.Generator | None = None) -> Example:
        """Resize and pad one example (rng unused: the official resize is deterministic for one scale)."""
        out = dict(example)
        out.update(resize_and_pad(example["frames"], example.get("masks"), self.size))
        return out


# ------------------------------------------------------------------------------------------------ COCO RLE
def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE ({"size": [h, w], "counts": compressed str / bytes or a list of ints}) to uint8 (h, w)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as err:
        raise RefVOSFormatError(f"not a COCO RLE (needs 'size': [h, w] and 'counts'): {str(rle)[:80]}") from err
    if isinstance(counts, (str, bytes)):
        counts = _rle_counts_from_string(counts.encode() if isinstance(counts, str) else counts)
    counts = np.asarray(counts, np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise RefVOSFormatError(f"RLE counts sum to {counts.sum()}, not h * w = {height * width}")
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1  # runs alternate 0, 1, 0, ... starting with zeros
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T.copy()  # column-major (Fortran order), as pycocotools


def _rle_counts_from_string(data: bytes) -> list[int]:
    # pycocotools' rleFrString: 5 bits per char (offset 48), bit 0x20 = more chars follow, bit 0x10 of the last
    # char = negative; from the third count on, counts are stored as differences to the count two before.
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise RefVOSFormatError("truncated compressed RLE string")
            char = data[position] - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary (h, w) mask ({"size": [h, w], "counts": str}), as pycocotools encodes."""
    mask = np.asarray(mask).astype(bool)
    flat = mask.T.ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    chars = bytearray()
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = not ((char & 0x10 == 0 and value == 0) or (char & 0x10 and value == -1))
            if more:
                char |= 0x20
            chars.append(char + 48)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": chars.decode("ascii")}
