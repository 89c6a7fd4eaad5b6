"""zoo.data: one model-agnostic loader for every task (grain over random-access sources).

Sources (`len`, `source[i] -> dict of numpy arrays`), per-example transforms with explicit RNG,
batch-level mixup/cutmix, and `make_pipeline` (deterministic, host-sharded, resumable).
This package never imports `models`, `kernels` or the trainer.

    import jax, numpy as np, zoo.data as zd
    from jax.sharding import NamedSharding, PartitionSpec as P

    train_source = zd.get_source("sklearn_digits", split="train")          # or "tfds:imagenet2012", "folder:/data/x"
    transform = zd.make_image_transform(train=True, image_size=32, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    mixup = zd.Mixup(train_source.num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    pipeline = zd.make_pipeline(train_source, batch_size=128, train=True, transform=transform, seed=0,
                                batch_transform=mixup)
    iterator = pipeline.iterator(state=saved_state_or_None)                # state: iterator.get_state() (JSON)
    sharding = NamedSharding(mesh, P("data"))
    batch = zd.to_global_arrays(next(iterator), sharding)                  # image f32 NHWC, label (N, K), _mask
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
