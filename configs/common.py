"""Data sections shared by the classification configs (one place for the embedded-digits and ImageNet recipes)."""

from __future__ import annotations

import ml_collections


def digits_data(source: str, image_size: int, *, eval_batch_size: int) -> ml_collections.ConfigDict:
    """Embedded real digits ("sklearn_digits" or "opencv_digits") at `image_size`, light augmentation, no flips."""
    return ml_collections.ConfigDict(
        {
            "train": {"name": source, "split": "train", "kwargs": {"image_size": image_size}},
            "eval": {"name": source, "split": "test", "kwargs": {"image_size": image_size}},
            "num_classes": 10,
            "image_size": image_size,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "scale": (0.6, 1.0),
            "ratio": (0.8, 1.25),
            "hflip": 0.0,  # digits are not mirror-symmetric
            "auto_augment": "",
            "reprob": 0.0,
            "mixup": 0.0,
            "cutmix": 0.0,
            "label_smoothing": 0.1,
            "eval_batch_size": eval_batch_size,
        }
    )


def imagenet_data(*, eval_batch_size: int = 1024) -> ml_collections.ConfigDict:
    """ImageNet-1k from a TFDS-prepared imagenet2012 with the DeiT/timm recipe (224, bicubic, crop 0.875,
    RandAugment m9-mstd0.5, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25).

    For an image-folder tree: --config.data.train.name=folder:/data/imagenet --config.data.eval.name=folder:/data/imagenet
    (with <root>/train/<wnid>/*.JPEG and <root>/validation/<wnid>/*.JPEG).
    """
    return ml_collections.ConfigDict(
        {
            "train": {"name": "tfds:imagenet2012", "split": "train", "kwargs": {}},
            "eval": {"name": "tfds:imagenet2012", "split": "validation", "kwargs": {}},
            "num_classes": 1000,
            "image_size": 224,
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "scale": (0.08, 1.0),
            "ratio": (3 / 4, 4 / 3),
            "hflip": 0.5,
            "auto_augment": "rand-m9-mstd0.5-inc1",
            "reprob": 0.25,
            "mixup": 0.8,
            "cutmix": 1.0,
            "mixup_prob": 1.0,
            "switch_prob": 0.5,
            "label_smoothing": 0.1,
            "eval_batch_size": eval_batch_size,
        }
    )
