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

Video: `get_source("videofolder:<path>" | "videolist:<file>" | "ssv2:<root>" | "tfdsvideo:<name>", num_frames=8)`
or the embedded "video_direction_speed" and "video_pan_direction"; `make_video_transform` (the ILA clip recipe), `Mixup` on (N, T, H, W, C),
`make_pipeline(..., worker_count=2)` to decode in grain worker processes, `aggregate_view_scores` for the
multi-view test protocol (zoo.data.video_io, video_sampling, video_transforms, video_sources, video_direction, video_pan).
"""

from zoo.data.colmap import ColmapFormatError, ColmapSource, Scene, SceneImage, colmap_source, load_scene
from zoo.data.embedded import opencv_digits, sklearn_digits, stratified_split_indices
from zoo.data.mixup import Mixup, mixup_cutmix, one_hot_smoothed
from zoo.data.pipeline import INDEX_KEY, MASK_KEY, SKIPPED_KEY, DataIterator, Pipeline, make_pipeline, to_global_arrays
from zoo.data.randaugment import RandAugment, parse_rand_augment
from zoo.data.registry import get_source, list_sources, register_prefix, register_source
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
from zoo.data.video_direction import DIRECTION_SPEED_CLASSES, DirectionSpeedSource, video_direction_speed
from zoo.data.video_io import VideoDecodeError, VideoInfo, decode_all_frames, iter_frames, probe_video, read_frames
from zoo.data.video_pan import PAN_CLASSES, PanDirectionSource, video_pan_direction
from zoo.data.video_sampling import multi_clip_indices, segment_indices, strided_indices
from zoo.data.video_sources import TfdsVideoSource, VideoClipSource, ssv2, video_folder, video_list
from zoo.data.video_transforms import aggregate_view_scores, flatten_views, make_video_transform, view_accuracy

__all__ = [
    "DIRECTION_SPEED_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INDEX_KEY",
    "MASK_KEY",
    "PAN_CLASSES",
    "SKIPPED_KEY",
    "ArraySource",
    "ColmapFormatError",
    "ColmapSource",
    "Compose",
    "DataIterator",
    "DirectionSpeedSource",
    "ImageFolderSource",
    "Mixup",
    "Normalize",
    "PanDirectionSource",
    "Pipeline",
    "RandAugment",
    "RandomErasing",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "ResizeCenterCrop",
    "Scene",
    "SceneImage",
    "Source",
    "TfdsSource",
    "TfdsVideoSource",
    "VideoClipSource",
    "VideoDecodeError",
    "VideoInfo",
    "aggregate_view_scores",
    "colmap_source",
    "decode_all_frames",
    "example_rng",
    "flatten_views",
    "get_source",
    "iter_frames",
    "list_sources",
    "load_image_rgb",
    "load_scene",
    "make_image_transform",
    "make_pipeline",
    "make_video_transform",
    "mixup_cutmix",
    "multi_clip_indices",
    "one_hot_smoothed",
    "opencv_digits",
    "parse_rand_augment",
    "probe_video",
    "read_frames",
    "register_prefix",
    "register_source",
    "segment_indices",
    "sklearn_digits",
    "ssv2",
    "stratified_split_indices",
    "strided_indices",
    "to_global_arrays",
    "video_direction_speed",
    "video_folder",
    "video_list",
    "video_pan_direction",
    "view_accuracy",
]  # fmt: skip
