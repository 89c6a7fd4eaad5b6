"""SAM2 promptable-segmentation fine-tuning (task "segmentation", SAM 2.1 training losses).

Variants (the part after the colon):
  vtest       tiny SAM2 at image_size 256 on real pedestrians of OpenCV's vtest.avi (person masks from background
              subtraction, a click or a box per person), frozen image encoder, 300 steps, CPU in tens of minutes:
                python train.py --config configs/sam2.py:vtest --workdir runs/sam2_vtest
              start from official weights with --config.model.pretrained=sam2_hiera_tiny.pt (without them the
              model starts from random weights and the masks are not meaningful)
  vtest_fast  the same, a few steps at image_size 128 (smoke test / CI)
                python train.py --config configs/sam2.py:vtest_fast --workdir runs/sam2_vtest_fast
  vtest_video       multi-frame training with memory (task "video_segmentation"): clips of 4 frames following one
                    person, frame 0 prompted by a click, box or its mask, frames 1-3 tracked through memory
                    attention, image encoder frozen; 300 steps at image_size 256:
                      python train.py --config configs/sam2.py:vtest_video --workdir runs/sam2_vtest_video
  vtest_video_fast  the same, a few steps at image_size 128, clips of 3 frames (smoke test / CI)
Reload: zoo.create_model("sam2_hiera_t", pretrained="runs/sam2_vtest").
Needs vtest.avi (apt-get install opencv-doc) and PyAV (pip install av).
"""

from __future__ import annotations

import ml_collections

from zoo.train.config import base_config


def _vtest(config: ml_collections.ConfigDict, image_size: int) -> None:
    config.task = "segmentation"
    config.model = ml_collections.ConfigDict(
        {"name": "sam2_hiera_t", "pretrained": "", "overrides": {"image_size": image_size},
         "freeze_image_encoder": True}
    )
    source = {"max_frames": 300, "frame_step": 5, "downscale": 2}
    config.data = ml_collections.ConfigDict(
        {
            "train": {"name": "vtest_person_masks", "split": "train", "kwargs": source},
            "eval": {"name": "vtest_person_masks", "split": "eval", "kwargs": source},
            "image_size": image_size,
            "box_prob": 0.5,
            "hflip": 0.5,
            "eval_batch_size": 16,
        }
    )
    # Frozen encoder: stop_gradient at its output (model.freeze_image_encoder: no backward pass through Hiera) and
    # frozen in the optimizer (no update, no weight decay, no AdamW state for it).
    config.optimizer.frozen = (r"image_encoder\..*",)
    config.batch_size = 8
    config.num_train_steps = 300
    config.optimizer.lr = 1e-4
    config.optimizer.weight_decay = 0.01
    config.optimizer.warmup_steps = 20
    config.optimizer.clip_norm = 0.1  # as the SAM2 training configs
    config.log_every = 10
    config.eval_every = 100
    config.checkpoint_every = 100


def _video(config: ml_collections.ConfigDict, image_size: int, clip_length: int) -> None:
    """`_vtest` with clips: task video_segmentation, the SAM 2.1 recipe's prompt mix (pt 0.5, of which box 0.5)."""
    _vtest(config, image_size)
    config.task = "video_segmentation"
    for split in ("train", "eval"):
        config.data[split].name = "vtest_person_clips"
        config.data[split].kwargs.clip_length = clip_length
    config.data.clip_length = clip_length
    config.data.pt_prob = 0.5
    config.data.box_prob = 0.5
    config.batch_size = 4
    config.data.eval_batch_size = 4


def _fast(config: ml_collections.ConfigDict, batch_size: int) -> None:
    """The smoke-test settings of the *_fast variants: 100 video frames, 8 steps, no eval or checkpoints."""
    for split in ("train", "eval"):
        config.data[split].kwargs.max_frames = 100
    config.batch_size = batch_size
    config.num_train_steps = 8
    config.optimizer.lr = 5e-4
    config.optimizer.warmup_steps = 0
    config.optimizer.clip_norm = 1.0
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 0


def get_config(arg: str = "vtest") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring)."""
    config = base_config()
    if arg == "vtest":
        _vtest(config, 256)
    elif arg == "vtest_fast":
        _vtest(config, 128)
        _fast(config, batch_size=4)
    elif arg == "vtest_video":
        _video(config, 256, clip_length=4)
    elif arg == "vtest_video_fast":
        _video(config, 128, clip_length=3)
        _fast(config, batch_size=2)
    else:
        raise ValueError(f"unknown configs/sam2.py variant {arg!r}; use vtest, vtest_fast, vtest_video or "
                         "vtest_video_fast")
    return config
