"""Real labelled image sets that ship with installed packages (no download).

- `sklearn_digits`: scikit-learn's `load_digits()`, 1797 handwritten 8x8 digits (values 0..16).
- `opencv_digits`: opencv-doc's `digits.png`, 5000 handwritten 20x20 digits (500 per class),
  laid out 50 rows x 100 columns, every 5 rows one class (Debian: `apt-get install opencv-doc`).

Both are upscaled to `image_size` RGB uint8 and split into train/test by a fixed-seed stratified
split, so a trainer can report held-out accuracy on real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.sources import ArraySource

DIGIT_CLASS_NAMES = [str(digit) for digit in range(10)]
OPENCV_DIGITS_ENV = "ZOO_OPENCV_DIGITS"
OPENCV_DIGITS_PATHS = (
    "/usr/share/doc/opencv-doc/examples/data/digits.png",
    "/usr/share/opencv4/samples/data/digits.png",
)
SPLITS = ("train", "test", "all")


def stratified_split_indices(labels: np.ndarray, split: str, *, test_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `split` ("train", "test" or "all") in a fixed-seed per-class split.

    Each class contributes round(test_fraction * class_size) examples to "test"; "train" is the
    rest, so the two are disjoint and cover every index.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    labels = np.asarray(labels)
    if split == "all":
        return np.arange(len(labels))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.permutation(members)[: round(test_fraction * len(members))]
        is_test[chosen] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def per_class_subset(labels: np.ndarray, per_class: int, *, seed: int) -> np.ndarray:
    """Sorted positions of `per_class` examples of every class of `labels` (a fixed-seed draw): the labelled subset
    of a few-shot fine-tune. A class with fewer examples is an error."""
    labels = np.asarray(labels)
    if per_class <= 0:
        raise ValueError(f"labels_per_class must be positive, got {per_class}")
    rng = np.random.default_rng(seed + 1)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(f"labels_per_class={per_class}, but class {label} has only {len(members)} examples here")
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def _split(labels: np.ndarray, split: str, *, test_fraction: float, seed: int,
           labels_per_class: int | None) -> np.ndarray:
    indices = stratified_split_indices(labels, split, test_fraction=test_fraction, seed=seed)
    if labels_per_class:
        indices = indices[per_class_subset(labels[indices], int(labels_per_class), seed=seed)]
    return indices


def _grey_to_rgb(images_nhw: np.ndarray, image_size: int | None) -> np.ndarray:
    """uint8 grey NHW -> uint8 RGB N,S,S,3 (bicubic upscaling with PIL)."""
    if image_size is not None and image_size != images_nhw.shape[1]:
        resized = [
            np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BICUBIC))
            for image in images_nhw
        ]
        images_nhw = np.stack(resized)
    return np.repeat(images_nhw[..., None], 3, axis=-1)


def sklearn_digits(
    split: str = "train", *, image_size: int | None = 32, test_fraction: float = 0.2, seed: int = 0,
    labels_per_class: int | None = None,
) -> ArraySource:
    """scikit-learn's 1797 real 8x8 digits as {"image": uint8 (S,S,3), "label": int32}.

    Args:
      split: "train", "test" or "all".
      image_size: output side (bicubic upscaling); None keeps 8x8.
      test_fraction, seed: the fixed stratified held-out split.
      labels_per_class: keep only this many examples per class of the split (a fixed-seed draw; few-shot runs).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int32)
    indices = _split(labels, split, test_fraction=test_fraction, seed=seed, labels_per_class=labels_per_class)
    grey = np.clip(np.round(digits.images[indices] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ArraySource({"image": _grey_to_rgb(grey, image_size), "label": labels[indices]}, DIGIT_CLASS_NAMES)


def find_opencv_digits() -> Path:
    """Path of opencv-doc's digits.png ($ZOO_OPENCV_DIGITS first), or a FileNotFoundError saying how to get it."""
    candidates = [os.environ[OPENCV_DIGITS_ENV]] if os.environ.get(OPENCV_DIGITS_ENV) else []
    candidates += list(OPENCV_DIGITS_PATHS)
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f"opencv digits.png not found (looked at {candidates}); install it with `apt-get install opencv-doc` "
        f"or set ${OPENCV_DIGITS_ENV} to a 2000x1000 grey PNG of 50x100 20x20 digit cells"
    )


def load_opencv_digits_grid(path: str | os.PathLike, cell: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Cut digits.png into (images uint8 N,20,20, labels int32 N); row r of cells has label r // 5."""
    with Image.open(path) as image:
        grid = np.asarray(image.convert("L"), dtype=np.uint8)
    rows, cols = grid.shape[0] // cell, grid.shape[1] // cell
    if rows % 10 or rows * cell != grid.shape[0] or cols * cell != grid.shape[1]:
        raise ValueError(f"{path}: expected a grid of {cell}x{cell} cells with a multiple of 10 rows, got {grid.shape}")
    cells = grid.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(rows * cols, cell, cell)
    labels = np.repeat(np.arange(rows) // (rows // 10), cols).astype(np.int32)
    return cells, labels


def opencv_digits(
    split: str = "train",
    *,
    image_size: int | None = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    labels_per_class: int | None = None,
) -> ArraySource:
    """opencv-doc's 5000 real 20x20 digits as {"image": uint8 (S,S,3), "label": int32}.

    Args:
      split: "train", "test" or "all".
      image_size: output side (bicubic upscaling); None keeps 20x20.
      test_fraction, seed: the fixed stratified held-out split.
      path: digits.png; default: $ZOO_OPENCV_DIGITS or the Debian opencv-doc location.
      labels_per_class: keep only this many examples per class of the split (a fixed-seed draw; few-shot runs).
    """
    cells, labels = load_opencv_digits_grid(path if path is not None else find_opencv_digits())
    indices = _split(labels, split, test_fraction=test_fraction, seed=seed, labels_per_class=labels_per_class)
    return ArraySource({"image": _grey_to_rgb(cells[indices], image_size), "label": labels[indices]}, DIGIT_CLASS_NAMES)
