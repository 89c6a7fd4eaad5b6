"""ViT image classification (timm layout).

Variants (the part after the colon):
  digits      a small ViT on scikit-learn's embedded real handwritten digits (no download), CPU in minutes:
                python train.py --config configs/vit.py:digits --workdir runs/vit_digits
  digits_fast the same, a few steps (smoke test / CI)
                python train.py --config configs/vit.py:digits_fast --workdir runs/vit_digits_fast
  b16_in1k    ViT-B/16 on ImageNet-1k from a TFDS-prepared imagenet2012 (DeiT-style recipe):
                python train.py --config configs/vit.py:b16_in1k --workdir runs/vit_b16
                (--config.data.train.kwargs.data_dir=... for a non-default TFDS data dir)
"""

from __future__ import annotations

import ml_collections

from configs.common import digits_data, imagenet_data
from zoo.train.config import base_config


def _digits(config: ml_collections.ConfigDict) -> None:
    config.model = ml_collections.ConfigDict(
        {
            "name": "vit_tiny_patch16_224",
            "pretrained": "",
            "overrides": {"img_size": 16, "patch_size": 4, "num_classes": 10, "embed_dim": 96, "depth": 4,
                          "num_heads": 3, "drop_path_rate": 0.0},
        }
    )  # fmt: skip
    config.data = digits_data("sklearn_digits", 16, eval_batch_size=128)
    config.batch_size = 128
    config.num_train_steps = 1500
    config.optimizer.lr = 2e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.warmup_steps = 100
    config.optimizer.clip_norm = 1.0
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint_every = 500


def _b16_in1k(config: ml_collections.ConfigDict) -> None:
    config.model = ml_collections.ConfigDict(
        {"name": "vit_base_patch16_224", "pretrained": "", "overrides": {"num_classes": 1000, "drop_path_rate": 0.1}}
    )
    config.data = imagenet_data(eval_batch_size=1024)
    config.batch_size = 1024
    steps_per_epoch = 1281167 // 1024
    config.num_train_steps = 300 * steps_per_epoch
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.warmup_steps = 5 * steps_per_epoch
    config.optimizer.min_lr = 1e-5
    config.ema_decay = 0.99996
    config.mesh.fsdp = 1
    config.log_every = 100
    config.eval_every = 5 * steps_per_epoch
    config.checkpoint_every = 2000


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring)."""
    config = base_config()
    if arg in ("digits", "digits_fast"):
        _digits(config)
        if arg == "digits_fast":
            config.num_train_steps = 20
            config.log_every = 1
            config.eval_every = 0
            config.checkpoint_every = 10
    elif arg == "b16_in1k":
        _b16_in1k(config)
    else:
        raise ValueError(f"unknown configs/vit.py variant {arg!r}; use digits, digits_fast or b16_in1k")
    return config
