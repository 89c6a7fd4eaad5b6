"""Per-example numpy transforms with explicit RNG (timm/torchvision semantics).

A transform is any callable `transform(example: dict, rng: np.random.Generator) -> dict`. The
pipeline gives each example its own generator from `example_rng(seed, epoch, index)`, so the
augmentation of example `index` in `epoch` is the same whatever the host count, thread count or
resume point. Image transforms read and write `example[key]` (uint8 HWC before `Normalize`,
float32 HWC after). Video transforms (`zoo.data.video_transforms`) take the same signature and
apply one draw of the rng to every frame of `example["video"]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

Example = dict[str, Any]
Transform = Callable[[Example, np.random.Generator], Example]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_RANDOM_INTERPOLATIONS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one example: a pure function of (seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index), 0x5EED]))


def resolve_interpolation(name: str, rng: np.random.Generator | None = None) -> Image.Resampling:
    """PIL resampling filter by name; "random" draws bilinear or bicubic (timm)."""
    if name == "random":
        if rng is None:
            raise ValueError("interpolation='random' needs an rng")
        return _RANDOM_INTERPOLATIONS[int(rng.integers(2))]
    if name not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {sorted(_INTERPOLATIONS)} or 'random'")
    return _INTERPOLATIONS[name]


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 HWC (C=1 or 3) or HW -> PIL image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"PIL-based transforms need uint8 images (apply Normalize last), got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return Image.fromarray(image)


def from_pil(image: Image.Image, channels: int) -> np.ndarray:
    """PIL image -> uint8 HWC with `channels` channels."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] != channels:
        array = np.repeat(array, channels, axis=-1) if array.shape[-1] == 1 else array[..., :channels]
    return array


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[-1]


class Compose:
    """Apply transforms in order, all drawing from the same per-example generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        for transform in self.transforms:
            example = transform(example, rng)
        return example

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(transform) for transform in self.transforms) + "])"


class RandomResizedCrop:
    """torchvision/timm RandomResizedCrop: crop a random area/aspect box, resize it to `size`.

    Args:
      size: output (height, width) or side.
      scale: range of the crop area as a fraction of the image area.
      ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
      interpolation: "bicubic", "bilinear", ... or "random" (bilinear or bicubic per example).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        key: str = "image",
    ):
        self.size = _size_hw(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.key = key
        resolve_interpolation(interpolation, np.random.default_rng(0))  # validates the name early

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop_height, crop_width), as torchvision's `RandomResizedCrop.get_params`."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            crop_width = round(math.sqrt(target_area * aspect_ratio))
            crop_height = round(math.sqrt(target_area / aspect_ratio))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(rng.integers(0, height - crop_height + 1))
                left = int(rng.integers(0, width - crop_width + 1))
                return top, left, crop_height, crop_width
        # Fallback: the largest centre crop within the ratio range.
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            crop_width, crop_height = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            crop_height, crop_width = height, round(height * max(self.ratio))
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        image = example[self.key]
        top, left, crop_height, crop_width = self.crop_box(image.shape[0], image.shape[1], rng)
        resample = resolve_interpolation(self.interpolation, rng)
        out_height, out_width = self.size
        resized = to_pil(image).resize(
            (out_width, out_height), resample, box=(left, top, left + crop_width, top + crop_height)
        )
        return {**example, self.key: from_pil(resized, _channels(image))}

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, {self.interpolation})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability `prob`."""

    def __init__(self, prob: float = 0.5, *, key: str = "image"):
        self.prob = prob
        self.key = key

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        # Always draw, so the rng stream after this transform does not depend on the outcome.
        if rng.random() < self.prob:
            return {**example, self.key: np.ascontiguousarray(example[self.key][:, ::-1])}
        return example

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.prob})"


class ResizeCenterCrop:
    """Eval preprocessing (timm): resize the short side to size / crop_pct, then centre-crop `size`."""

    def __init__(
        self, size: int | Sequence[int], *, crop_pct: float = 0.875, interpolation: str = "bicubic", key: str = "image"
    ):
        if interpolation == "random":
            raise ValueError("eval resize needs a fixed interpolation")
        self.size = _size_hw(size)
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.key = key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        image = example[self.key]
        height, width = image.shape[:2]
        out_height, out_width = self.size
        if out_height == out_width:
            # torchvision Resize(int): the short side becomes scale_size, the other keeps the aspect.
            scale_size = math.floor(out_height / self.crop_pct)
            if height <= width:
                new_height, new_width = scale_size, int(scale_size * width / height)
            else:
                new_height, new_width = int(scale_size * height / width), scale_size
        else:
            new_height, new_width = (math.floor(side / self.crop_pct) for side in self.size)
        pil = to_pil(image).resize((new_width, new_height), resolve_interpolation(self.interpolation))
        top = round((new_height - out_height) / 2.0)
        left = round((new_width - out_width) / 2.0)
        cropped = pil.crop((left, top, left + out_width, top + out_height))
        return {**example, self.key: from_pil(cropped, _channels(image))}

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_pct={self.crop_pct}, {self.interpolation})"


class Normalize:
    """uint8 HWC -> float32 HWC: (x / 255 - mean) / std."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *, key: str = "image"
    ):
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(std, np.float32) * 255.0)
        self.key = key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        image = np.asarray(example[self.key], dtype=np.float32)
        return {**example, self.key: ((image - self.mean) * self.inv_std).astype(np.float32)}

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean / 255.0}, std={1.0 / (self.inv_std * 255.0)})"


class RandomErasing:
    """timm RandomErasing on a normalised float32 HWC image (or a clip: any leading axes, e.g. THWC).

    With probability `prob`, erase `count` (1 by default) boxes of area fraction in
    [min_area, max_area] and log-uniform aspect in [min_aspect, 1/min_aspect]. mode "pixel" fills
    with per-pixel normal noise, "rand" with per-channel noise, "const" with zeros. On a clip the
    same boxes and the same fill go to every frame (as the official ILA video pipeline erases).
    """

    def __init__(
        self,
        prob: float = 0.25,
        *,
        mode: str = "pixel",
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        min_count: int = 1,
        max_count: int | None = None,
        key: str = "image",
    ):
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"unknown erasing mode {mode!r}; expected 'pixel', 'rand' or 'const'")
        self.prob = prob
        self.mode = mode
        self.min_area, self.max_area = min_area, max_area
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.min_count = min_count
        self.max_count = max_count or min_count
        self.key = key

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        if rng.random() > self.prob:
            return example
        image = np.array(example[self.key], dtype=np.float32, copy=True)
        height, width, channels = image.shape[-3:]
        area = height * width
        count = (
            self.min_count
            if self.min_count == self.max_count
            else int(rng.integers(self.min_count, self.max_count + 1))
        )
        for _ in range(count):
            for _attempt in range(10):
                target_area = rng.uniform(self.min_area, self.max_area) * area / count
                aspect_ratio = math.exp(rng.uniform(*self.log_aspect))
                box_height = round(math.sqrt(target_area * aspect_ratio))
                box_width = round(math.sqrt(target_area / aspect_ratio))
                if box_width < width and box_height < height:
                    top = int(rng.integers(0, height - box_height + 1))
                    left = int(rng.integers(0, width - box_width + 1))
                    if self.mode == "pixel":
                        fill = rng.standard_normal((box_height, box_width, channels), dtype=np.float32)
                    elif self.mode == "rand":
                        fill = rng.standard_normal((1, 1, channels), dtype=np.float32)
                    else:
                        fill = np.zeros((1, 1, channels), np.float32)
                    image[..., top : top + box_height, left : left + box_width, :] = fill
                    break
        return {**example, self.key: image}

    def __repr__(self) -> str:
        return f"RandomErasing(prob={self.prob}, mode={self.mode!r})"


def make_image_transform(
    *,
    train: bool,
    image_size: int | Sequence[int] = 224,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    auto_augment: str | None = None,
    interpolation: str = "bicubic",
    reprob: float = 0.0,
    remode: str = "pixel",
    recount: int = 1,
    crop_pct: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    key: str = "image",
) -> Compose:
    """timm `create_transform` equivalent: uint8 HWC example -> float32 normalised HWC.

    Train: RandomResizedCrop(scale, ratio) -> flip -> RandAugment(`auto_augment`, e.g.
    "rand-m9-mstd0.5-inc1") -> Normalize -> RandomErasing(reprob). Eval: resize to
    image_size / crop_pct, centre crop, Normalize.
    """
    if not train:
        eval_interpolation = "bicubic" if interpolation == "random" else interpolation
        return Compose(
            [
                ResizeCenterCrop(image_size, crop_pct=crop_pct, interpolation=eval_interpolation, key=key),
                Normalize(mean, std, key=key),
            ]
        )
    transforms: list[Transform] = [
        RandomResizedCrop(image_size, scale=scale, ratio=ratio, interpolation=interpolation, key=key)
    ]
    if hflip > 0:
        transforms.append(RandomHorizontalFlip(hflip, key=key))
    if auto_augment:
        from zoo.data.randaugment import RandAugment

        fill = tuple(round(255 * channel_mean) for channel_mean in mean)
        transforms.append(RandAugment.from_config(auto_augment, fill=fill, interpolation=interpolation, key=key))
    transforms.append(Normalize(mean, std, key=key))
    if reprob > 0:
        transforms.append(RandomErasing(reprob, mode=remode, max_count=recount, key=key))
    return Compose(transforms)
