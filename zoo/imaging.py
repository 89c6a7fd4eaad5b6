"""Image-size arithmetic and frame resizing shared by the loader (`zoo.data`) and the models' inference wrappers,
which may not import `zoo.data` (DESIGN.md, "Who imports whom"). Nothing here imports models or the trainer."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of torchvision-detr `resize(image, size, max_size=size)`: short side `size`, long side capped at it."""
    short, long = min(height, width), max(height, width)
    target = size
    if long / short * target > size:
        target = round(size * short / long)
    if (width <= height and width == target) or (height <= width and height == target):
        return height, width
    if width < height:
        return int(target * height / width), target
    return target, int(target * width / height)


def resize_and_pad_frames(frames: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 frames (T, H, W, 3) -> (uint8 (T, size, size, 3): each resized by `resized_size` (PIL bilinear) and
    zero-padded at the bottom right, (h, w) after resizing)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3); got shape {frames.shape}")
    height, width = frames.shape[1:3]
    new_h, new_w = resized_size(height, width, size)
    if max(new_h, new_w) > size:
        raise ValueError(f"a {height}x{width} frame resizes to {new_h}x{new_w}, larger than the pad size {size}")
    out = np.zeros((len(frames), size, size, 3), np.uint8)
    for t, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        out[t, :new_h, :new_w] = np.asarray(image)
    return out, (new_h, new_w)


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.6
) -> np.ndarray:
    """uint8 image (H, W, 3) with the pixels where `mask` (H, W) is True blended towards `color` (weight `alpha`)."""
    image = np.asarray(image)
    mask = np.asarray(mask, bool)
    if image.ndim != 3 or image.shape[-1] != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3) and mask (H, W); got {image.shape} and {mask.shape}")
    out = image.astype(np.uint8).copy()
    out[mask] = ((1.0 - alpha) * out[mask] + alpha * np.asarray(color, np.float64)).astype(np.uint8)
    return out


def join_with_gap(pieces: list[np.ndarray], axis: int = 1, gap: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 images (H, W, 3) of equal size along the other axis, concatenated along `axis` (1: side by side, 0:
    stacked) with `gap` pixels of `fill` between them (a contact sheet's rows or columns)."""
    if not pieces:
        raise ValueError("join_with_gap needs at least one image")
    shape = list(pieces[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, fill, np.uint8)
    joined = [part for piece in pieces for part in (np.asarray(piece, np.uint8), spacer)][:-1]
    return np.concatenate(joined, axis=axis)
