"""Clip transforms (ILA / TSN recipe) with one random draw per clip, plus the multi-view test protocol.

A clip is `example["video"]`: uint8 (T, H, W, 3) before `Normalize`, float32 after; test views add leading axes
((K, T, H, W, 3) for K clips, (V, T, S, S, 3) after `ThreeCrop`). Every transform works on any leading axes and
applies the SAME parameters to every frame of an example (a crop box, a jitter, an erased box), drawn from the
per-example generator of the pipeline (`zoo.data.transforms.example_rng`), so a resumed pipeline sees the same clips.

    train = make_video_transform(train=True, image_size=224)                  # the ILA train recipe
    test = make_video_transform(train=False, image_size=224, num_crops=3)     # short side S, ThreeCrop
    scores = aggregate_view_scores(logits, num_views=12)                      # 4 clips x 3 crops per video

The ILA train recipe (`datasets/build.py` of the official code): short side 256/224 * S, MultiScaleCrop with
scales (1, .875, .75, .66) (crop width and height each a scale times the short side, at most one scale step
apart, at one of 5 fixed offsets), resize to S x S, no flip, ColorJitter with probability 0.8, grayscale with
probability 0.2, ImageNet mean/std on 0..255, RandomErasing 0.25.

Per clip or per frame, as in the official code:
- RandomErasing: per clip. The official `RandomErasing` restores Python/torch/numpy RNG states before each frame,
  so every frame gets the same box; timm's default mode "const" fills it with 0 (the mean after normalising).
  `make_video_transform` does the same (`RandomErasing(mode="const")` from `zoo.data.transforms`, which erases the
  same box across leading axes).
- ColorJitter: the decision (p 0.8) is per clip there, but torchvision's `ColorJitter` draws new factors for every
  frame it is called on. Here the factors are per clip by default (a jitter that flickers from frame to frame is a
  temporal artefact a video model could learn); `ColorJitter(per_frame=True)` reproduces the official behaviour.
- GrayScale, crops, resizes: per clip in both.
Resizes use PIL bilinear; the official mmcv uses OpenCV bilinear, which does not antialias when shrinking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from zoo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomErasing,
    Transform,
    resolve_interpolation,
)

Example = dict[str, Any]
ILA_SCALES = (1.0, 0.875, 0.75, 0.66)


def _frames(clip: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(..., H, W, C) -> ((N, H, W, C), leading shape)."""
    clip = np.asarray(clip)
    if clip.ndim < 4:
        raise ValueError(f"expected a clip (..., T, H, W, C), got shape {clip.shape}")
    return clip.reshape((-1, *clip.shape[-3:])), clip.shape[:-3]


def _map_frames(clip: np.ndarray, fn) -> np.ndarray:
    frames, lead = _frames(clip)
    out = np.stack([fn(frame) for frame in frames])
    return out.reshape((*lead, *out.shape[1:]))


def _resize_frames(clip: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    if clip.dtype != np.uint8:
        raise TypeError(f"resize needs uint8 clips (normalise last), got {clip.dtype}")
    if clip.shape[-2] == width and clip.shape[-3] == height:
        return clip
    resample = resolve_interpolation(interpolation)
    return _map_frames(clip, lambda frame: np.asarray(Image.fromarray(frame).resize((width, height), resample)))


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side `short_side`, the long side rounded as mmcv.rescale_size does."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeShortSide:
    """Scale every frame so its short side is `size` (aspect kept)."""

    def __init__(self, size: int, *, interpolation: str = "bilinear", key: str = "video"):
        self.size, self.interpolation, self.key = int(size), interpolation, key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        clip = example[self.key]
        height, width = short_side_size(clip.shape[-3], clip.shape[-2], self.size)
        return {**example, self.key: _resize_frames(clip, width, height, self.interpolation)}

    def __repr__(self) -> str:
        return f"ResizeShortSide({self.size})"


class Resize:
    """Resize every frame to exactly (height, width) (the aspect is not kept)."""

    def __init__(self, size: int | Sequence[int], *, interpolation: str = "bilinear", key: str = "video"):
        self.height, self.width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.interpolation, self.key = interpolation, key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        return {**example, self.key: _resize_frames(example[self.key], self.width, self.height, self.interpolation)}

    def __repr__(self) -> str:
        return f"Resize(({self.height}, {self.width}))"


class CenterCrop:
    """The centred `size` x `size` box of every frame (mmaction rounding: offsets (W - S) // 2, (H - S) // 2)."""

    def __init__(self, size: int, *, key: str = "video"):
        self.size, self.key = int(size), key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        clip = example[self.key]
        top, left = (clip.shape[-3] - self.size) // 2, (clip.shape[-2] - self.size) // 2
        if top < 0 or left < 0:
            raise ValueError(f"centre crop {self.size} larger than the frames {clip.shape[-3:-1]}")
        return {**example, self.key: np.ascontiguousarray(clip[..., top : top + self.size, left : left + self.size, :])}

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class MultiScaleCrop:
    """TSN / mmaction `MultiScaleCrop`: a box whose width and height are each a scale times the short side.

    Candidate (w, h) pairs take scales at most `max_distort` positions apart in `scales`; a side within 2 pixels
    of `input_size` snaps to it. With `fix_crop` the box sits at one of 5 fixed offsets (the four corners and the
    centre, on a grid of quarter steps), else anywhere. Only crops: resize to S x S afterwards (`Resize`).
    """

    def __init__(
        self,
        input_size: int,
        *,
        scales: Sequence[float] = ILA_SCALES,
        max_distort: int = 1,
        fix_crop: bool = True,
        key: str = "video",
    ):
        self.input_size, self.scales, self.max_distort = int(input_size), tuple(scales), max_distort
        self.fix_crop, self.key = fix_crop, key

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop_height, crop_width) for a frame of this size."""
        base = min(height, width)
        sizes = [int(base * scale) for scale in self.scales]
        candidates = [
            [crop_w, crop_h]
            for i, crop_h in enumerate(sizes)
            for j, crop_w in enumerate(sizes)
            if abs(i - j) <= self.max_distort
        ]
        crop_w, crop_h = candidates[int(rng.integers(len(candidates)))]
        crop_w = self.input_size if abs(crop_w - self.input_size) < 3 else crop_w
        crop_h = self.input_size if abs(crop_h - self.input_size) < 3 else crop_h
        crop_w, crop_h = min(crop_w, width), min(crop_h, height)
        if self.fix_crop:
            w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
            offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
            left, top = offsets[int(rng.integers(len(offsets)))]
        else:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
        return top, left, crop_h, crop_w

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        clip = example[self.key]
        top, left, crop_h, crop_w = self.crop_box(clip.shape[-3], clip.shape[-2], rng)
        return {**example, self.key: np.ascontiguousarray(clip[..., top : top + crop_h, left : left + crop_w, :])}

    def __repr__(self) -> str:
        return f"MultiScaleCrop({self.input_size}, scales={self.scales}, max_distort={self.max_distort})"


def _adjust_hue(image: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's PIL `adjust_hue`: shift the HSV hue channel by hue_factor * 255 (mod 256)."""
    hue, saturation, value = image.convert("HSV").split()
    shifted = (np.asarray(hue, np.int64) + int(hue_factor * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8)), saturation, value)).convert("RGB")


class ColorJitter:
    """torchvision ColorJitter (random order of brightness, contrast, saturation, hue) with probability `prob`.

    `per_frame=False` (default): one draw of the order and factors for the whole clip. `per_frame=True`: a new
    draw for every frame, as the official ILA pipeline does (the probability is per clip in both).
    """

    def __init__(
        self,
        prob: float = 0.8,
        *,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        per_frame: bool = False,
        key: str = "video",
    ):
        self.prob, self.per_frame, self.key = prob, per_frame, key
        self.ranges = (
            (1 - brightness, 1 + brightness),
            (1 - contrast, 1 + contrast),
            (1 - saturation, 1 + saturation),
            (-hue, hue),
        )

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
        """(order of the 4 adjustments, their factors)."""
        return rng.permutation(4), [float(rng.uniform(low, high)) for low, high in self.ranges]

    @staticmethod
    def apply(frame: np.ndarray, order: np.ndarray, factors: Sequence[float]) -> np.ndarray:
        """Jitter one uint8 HWC frame with fixed parameters."""
        image = Image.fromarray(frame)
        for op in order:
            if op == 0:
                image = ImageEnhance.Brightness(image).enhance(factors[0])
            elif op == 1:
                image = ImageEnhance.Contrast(image).enhance(factors[1])
            elif op == 2:
                image = ImageEnhance.Color(image).enhance(factors[2])
            else:
                image = _adjust_hue(image, factors[3])
        return np.asarray(image)

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        if rng.random() >= self.prob:
            return example
        clip = example[self.key]
        if self.per_frame:
            out = _map_frames(clip, lambda frame: self.apply(frame, *self.draw(rng)))
        else:
            order, factors = self.draw(rng)
            out = _map_frames(clip, lambda frame: self.apply(frame, order, factors))
        return {**example, self.key: out}

    def __repr__(self) -> str:
        return f"ColorJitter(prob={self.prob}, per_frame={self.per_frame})"


class RandomGrayscale:
    """With probability `prob`, every frame becomes grey (PIL "L", ITU-R 601 luma) repeated on 3 channels."""

    def __init__(self, prob: float = 0.2, *, key: str = "video"):
        self.prob, self.key = prob, key

    def __call__(self, example: Example, rng: np.random.Generator) -> Example:
        if rng.random() >= self.prob:
            return example
        clip = example[self.key]
        grey = _map_frames(clip, lambda frame: np.asarray(Image.fromarray(frame).convert("L"))[..., None])
        return {**example, self.key: np.repeat(grey, 3, axis=-1)}

    def __repr__(self) -> str:
        return f"RandomGrayscale({self.prob})"


class ThreeCrop:
    """Three `size` x `size` crops along the long side (mmaction order: start, end, middle) as a view axis.

    The frames must already have short side `size` (`ResizeShortSide(size)`). A clip (T, H, W, C) becomes
    (3, T, S, S, C); clips (K, T, H, W, C) become (3K, T, S, S, C), view v = clip v // 3, crop v % 3.
    """

    def __init__(self, size: int, *, key: str = "video"):
        self.size, self.key = int(size), key

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        clip = np.asarray(example[self.key])
        height, width = clip.shape[-3:-1]
        size = self.size
        if min(height, width) != size:
            raise ValueError(f"ThreeCrop({size}) needs frames with short side {size}, got {height}x{width}")
        if height == size:
            step = (width - size) // 2
            boxes = [(0, 0), (0, 2 * step), (0, step)]
        else:
            step = (height - size) // 2
            boxes = [(0, 0), (2 * step, 0), (step, 0)]
        crops = np.stack([clip[..., top : top + size, left : left + size, :] for top, left in boxes], axis=-5)
        # (..., 3, T, S, S, C) -> (views, T, S, S, C) with the crop index fastest.
        views = crops.reshape((-1, *crops.shape[-4:]))
        return {**example, self.key: np.ascontiguousarray(views)}

    def __repr__(self) -> str:
        return f"ThreeCrop({self.size})"


def make_video_transform(
    *,
    train: bool,
    image_size: int = 224,
    scales: Sequence[float] = ILA_SCALES,
    color_jitter: float = 0.8,
    color_jitter_per_frame: bool = False,
    grayscale: float = 0.2,
    reprob: float = 0.25,
    remode: str = "const",
    num_crops: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    key: str = "video",
) -> Compose:
    """The ILA clip transform: uint8 (..., T, H, W, 3) -> float32 normalised, S x S frames.

    Train: short side int(256/224 * S) -> MultiScaleCrop(scales) -> resize S x S -> ColorJitter(color_jitter)
    -> grayscale(grayscale) -> Normalize -> RandomErasing(reprob, remode; one box per clip). No flip.
    Test, num_crops=1: short side int(256/224 * S) -> centre crop S (the official single-view validation).
    Test, num_crops=3: short side S -> ThreeCrop (views stacked on the leading axis) -> Normalize.
    """
    scale_size = int(256 / 224 * image_size)
    if not train:
        if num_crops == 1:
            spatial: list[Transform] = [
                ResizeShortSide(scale_size, interpolation=interpolation, key=key),
                CenterCrop(image_size, key=key),
            ]
        elif num_crops == 3:
            spatial = [
                ResizeShortSide(image_size, interpolation=interpolation, key=key),
                ThreeCrop(image_size, key=key),
            ]
        else:
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        return Compose([*spatial, Normalize(mean, std, key=key)])
    transforms: list[Transform] = [
        ResizeShortSide(scale_size, interpolation=interpolation, key=key),
        MultiScaleCrop(image_size, scales=scales, key=key),
        Resize(image_size, interpolation=interpolation, key=key),
    ]
    if color_jitter > 0:
        transforms.append(ColorJitter(color_jitter, per_frame=color_jitter_per_frame, key=key))
    if grayscale > 0:
        transforms.append(RandomGrayscale(grayscale, key=key))
    transforms.append(Normalize(mean, std, key=key))
    if reprob > 0:
        transforms.append(RandomErasing(reprob, mode=remode, key=key))
    return Compose(transforms)


def flatten_views(batch: dict[str, Any], *, key: str = "video") -> tuple[dict[str, Any], int]:
    """A test batch with views (B, V, T, H, W, C) -> ({key: (B*V, T, H, W, C), ...}, V); other fields unchanged.

    Video b's views are rows b*V .. b*V + V - 1, the layout `aggregate_view_scores` expects.
    """
    videos = np.asarray(batch[key])
    if videos.ndim != 6:
        raise ValueError(f"expected {key!r} of shape (B, V, T, H, W, C), got {videos.shape}")
    return {**batch, key: videos.reshape((-1, *videos.shape[2:]))}, videos.shape[1]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 -> float32."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(np.float32)


def aggregate_view_scores(
    logits: np.ndarray, num_views: int | None = None, *, apply_softmax: bool = True
) -> np.ndarray:
    """Per-video scores: the sum over views of each view's softmax (the ILA test protocol).

    Args:
      logits: (B, V, K), or (B*V, K) with `num_views` (video-major, as `flatten_views` lays it out).
      num_views: V for the flat form.
      apply_softmax: False sums the given scores as they are (already probabilities).

    Returns:
      (B, K) float32; argmax is the prediction, and dividing by V gives the mean probability.
    """
    logits = np.asarray(logits)
    if logits.ndim == 2:
        if not num_views or logits.shape[0] % num_views:
            raise ValueError(f"(B*V, K) logits of shape {logits.shape} need num_views dividing {logits.shape[0]}")
        logits = logits.reshape(-1, num_views, logits.shape[-1])
    elif logits.ndim != 3:
        raise ValueError(f"expected (B, V, K) or (B*V, K) logits, got {logits.shape}")
    scores = softmax(logits) if apply_softmax else logits.astype(np.float32)
    return scores.sum(axis=1)


def view_accuracy(logits: np.ndarray, labels: np.ndarray, num_views: int | None = None) -> float:
    """Top-1 accuracy of the aggregated view scores against (B,) integer labels."""
    scores = aggregate_view_scores(logits, num_views)
    return float(np.mean(scores.argmax(-1) == np.asarray(labels).reshape(-1)))
