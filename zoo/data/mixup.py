"""Batch-level mixup / cutmix with timm semantics, on host numpy batches (NHWC images or NTHWC clips).

`Mixup(...)(batch, rng)` returns a new batch whose images are mixed with the batch reversed
(`x[::-1]`, as timm's `x.flip(0)`) and whose "label" becomes float32 soft targets of shape
(N, num_classes): label smoothing first, then `lam * y + (1 - lam) * y[::-1]`. Every row sums to 1.
Clips (N, T, H, W, C) mix whole clips: one lam per clip, and the cutmix box is the same on every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def one_hot_smoothed(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """Label-smoothed one-hot float32 targets (timm: off = s / K, on = 1 - s + off)."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    targets = np.full((len(labels), num_classes), off_value, dtype=np.float32)
    targets[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = on_value
    return targets


def rand_bbox(
    height: int, width: int, lam: float, rng: np.random.Generator, *, margin: float = 0.0
) -> tuple[int, int, int, int]:
    """timm `rand_bbox`: a box of area ~(1 - lam) with a uniform centre, clipped to the image."""
    ratio = np.sqrt(1.0 - lam)
    cut_height, cut_width = int(height * ratio), int(width * ratio)
    margin_y, margin_x = int(margin * cut_height), int(margin * cut_width)
    center_y = int(rng.integers(margin_y, height - margin_y))
    center_x = int(rng.integers(margin_x, width - margin_x))
    y_low = int(np.clip(center_y - cut_height // 2, 0, height))
    y_high = int(np.clip(center_y + cut_height // 2, 0, height))
    x_low = int(np.clip(center_x - cut_width // 2, 0, width))
    x_high = int(np.clip(center_x + cut_width // 2, 0, width))
    return y_low, y_high, x_low, x_high


def rand_bbox_minmax(
    height: int, width: int, minmax: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """timm `rand_bbox_minmax`: box sides drawn uniformly in [min, max] fractions of the image."""
    cut_height = int(rng.integers(int(height * minmax[0]), int(height * minmax[1])))
    cut_width = int(rng.integers(int(width * minmax[0]), int(width * minmax[1])))
    y_low = int(rng.integers(0, height - cut_height))
    x_low = int(rng.integers(0, width - cut_width))
    return y_low, y_low + cut_height, x_low, x_low + cut_width


class Mixup:
    """timm `Mixup` for numpy NHWC image batches or NTHWC clip batches (one box for all frames of a clip).

    Args:
      num_classes: width of the soft targets.
      mixup_alpha: Beta(alpha, alpha) for mixup; 0 disables mixup.
      cutmix_alpha: Beta(alpha, alpha) for cutmix; 0 disables cutmix.
      cutmix_minmax: box side fraction range (overrides cutmix_alpha's box, as in timm).
      prob: probability of mixing at all for a batch (or element in "elem" mode).
      switch_prob: probability of cutmix instead of mixup when both are on.
      mode: "batch" (one lam for the whole batch) or "elem" (one lam per example).
      correct_lam: recompute lam from the clipped cutmix box area.
      label_smoothing: smoothing applied to both one-hot targets before mixing.
      image_key, label_key: batch fields.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        image_key: str = "image",
        label_key: str = "label",
    ):
        if mode not in ("batch", "elem"):
            raise ValueError(f"unsupported mixup mode {mode!r}; expected 'batch' or 'elem'")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = tuple(cutmix_minmax) if cutmix_minmax is not None else None
        if self.cutmix_minmax is not None:
            self.cutmix_alpha = 1.0  # timm: minmax forces cutmix on
        self.prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.correct_lam = correct_lam
        self.label_smoothing = label_smoothing
        self.image_key = image_key
        self.label_key = label_key

    def _draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch or one element, as timm's `_params_per_batch`."""
        if not (self.mixup_alpha > 0 or self.cutmix_alpha > 0) or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        elif self.mixup_alpha > 0:
            use_cutmix, alpha = False, self.mixup_alpha
        else:
            use_cutmix, alpha = True, self.cutmix_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def _cutmix_box(self, height: int, width: int, lam: float, rng: np.random.Generator):
        if self.cutmix_minmax is not None:
            box = rand_bbox_minmax(height, width, self.cutmix_minmax, rng)
        else:
            box = rand_bbox(height, width, lam, rng)
        if self.correct_lam or self.cutmix_minmax is not None:
            y_low, y_high, x_low, x_high = box
            lam = 1.0 - (y_high - y_low) * (x_high - x_low) / float(height * width)
        return box, lam

    def __call__(self, batch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Mix `batch[image_key]` ((N, H, W, C) or (N, T, H, W, C) float) into (N, K) soft `batch[label_key]`."""
        images = np.asarray(batch[self.image_key])
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"mixup needs float images (normalise first), got {images.dtype}")
        labels = np.asarray(batch[self.label_key])
        size = images.shape[0]
        height, width = images.shape[-3:-1]
        reversed_images = images[::-1]
        mixed = images.copy()
        if self.mode == "batch":
            lam, use_cutmix = self._draw(rng)
            if lam != 1.0:
                if use_cutmix:
                    (y_low, y_high, x_low, x_high), lam = self._cutmix_box(height, width, lam, rng)
                    box = (slice(None), Ellipsis, slice(y_low, y_high), slice(x_low, x_high), slice(None))
                    mixed[box] = reversed_images[box]
                else:
                    mixed = (images * lam + reversed_images * (1.0 - lam)).astype(images.dtype)
            lam_per_example = np.full((size,), lam, dtype=np.float32)
        else:
            lam_per_example = np.ones((size,), dtype=np.float32)
            for i in range(size):
                lam, use_cutmix = self._draw(rng)
                if lam == 1.0:
                    continue
                if use_cutmix:
                    (y_low, y_high, x_low, x_high), lam = self._cutmix_box(height, width, lam, rng)
                    box = (i, Ellipsis, slice(y_low, y_high), slice(x_low, x_high), slice(None))
                    mixed[box] = reversed_images[box]
                else:
                    mixed[i] = images[i] * lam + reversed_images[i] * (1.0 - lam)
                lam_per_example[i] = lam
        targets = one_hot_smoothed(labels, self.num_classes, self.label_smoothing)
        lam_column = lam_per_example[:, None]
        soft = (targets * lam_column + targets[::-1] * (1.0 - lam_column)).astype(np.float32)
        return {**batch, self.image_key: mixed, self.label_key: soft}

    def __repr__(self) -> str:
        return (
            f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
            f"switch_prob={self.switch_prob}, mode={self.mode!r}, smoothing={self.label_smoothing})"
        )


def mixup_cutmix(batch: dict[str, Any], rng: np.random.Generator, *, num_classes: int, **kwargs: Any) -> dict[str, Any]:
    """Functional form of `Mixup(num_classes, **kwargs)(batch, rng)`."""
    return Mixup(num_classes, **kwargs)(batch, rng)
