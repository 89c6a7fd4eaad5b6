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
