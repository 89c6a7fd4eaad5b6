"""zoo.data: one model-agnostic loader for every task (grain over random-access sources).

Sources (`len`, `source[i] -> dict of numpy arrays`), per-example transforms with explicit RNG,
batch-level mixup/cutmix, and `make_pipeline` (deterministic, host-sharded, resumable).
This package never imports `models`, `kernels` or the trainer.
"""

from zoo.data.embedded import opencv_digits, sklearn_digits, stratified_split_indices
from zoo.data.mixup import Mixup, mixup_cutmix, one_hot_smoothed
from zoo.data.pipeline import INDEX_KEY, MASK_KEY, DataIterator, Pipeline, make_pipeline, to_global_arrays
from zoo.data.randaugment import RandAugment, parse_rand_augment
from zoo.data.registry import get_source, list_sources, register_source
from zoo.data.sources import ArraySource, ImageFolderSource, Source, TfdsSource, load_image_rgb
from zoo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeCenterCrop,
    example_rng,
    make_image_transform,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INDEX_KEY",
    "MASK_KEY",
    "ArraySource",
    "Compose",
    "DataIterator",
    "ImageFolderSource",
    "Mixup",
    "Normalize",
    "Pipeline",
    "RandAugment",
    "RandomErasing",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "ResizeCenterCrop",
    "Source",
    "TfdsSource",
    "example_rng",
    "get_source",
    "list_sources",
    "load_image_rgb",
    "make_image_transform",
    "make_pipeline",
    "mixup_cutmix",
    "one_hot_smoothed",
    "opencv_digits",
    "parse_rand_augment",
    "register_source",
    "sklearn_digits",
    "stratified_split_indices",
    "to_global_arrays",
]  # fmt: skip
