"""MaskAlign: pre-training (task "maskalign") and fine-tuning (task "classification") configs.

Variants (the part after the colon):
  b16_in1k           the official ViT-B/16 pre-training with a CLIP-B/16 teacher on ImageNet-1k (README recipe: batch
                     1024, lr 1.5e-4 x 1024/256, 200 epochs, 20 warm-up, AdamW (0.9, 0.95), wd 0.05 except 1-D / biases
                     / distill_weights, drop path 0.1, RandomResizedCrop(0.2, 1) + flip). The teacher's weights are
                     a Hugging Face CLIP checkpoint you supply (openai/clip-vit-base-patch16's model.safetensors):
                       python train.py --config configs/maskalign.py:b16_in1k --workdir runs/maskalign_b16 \\
                         --config.model.teacher=/path/to/clip-vit-base-patch16/model.safetensors
  b16_in1k_finetune  the official ViT-B/16 fine-tuning (avg pool + fc_norm, layer decay 0.55, 100 epochs, blr 3e-4,
                     RandAugment, mixup 0.8 / cutmix 1.0, smoothing 0.1, drop path 0.2, random erasing 0.25) from a
                     MaskAlign checkpoint (an official .pth or the .npz a pre-training run writes):
                       python train.py --config configs/maskalign.py:b16_in1k_finetune --workdir runs/maskalign_b16_ft \\
                         --config.model.pretrained=runs/maskalign_b16/maskalign_pretrain.npz

The reduced-scale run on real offline digits (`python -m benchmarks.maskalign_digits` runs all of it and writes the
table; or step by step):
  1. the teacher, a small ViT on scikit-learn's digits (the classification job):
       python train.py --config configs/vit.py:digits --workdir runs/vit_digits
  2. digits             MaskAlign pre-training of a student of the same size on opencv-doc's digits, WITHOUT labels
                        (the teacher trained on the other digit source; attention-guided masking at 0.7):
       python train.py --config configs/maskalign.py:digits --workdir runs/maskalign_digits
  3. digits_finetune    fine-tuning with 20 labels per class from the MaskAlign student:
       python train.py --config configs/maskalign.py:digits_finetune --workdir runs/maskalign_digits_ft
  4. digits_scratch     the same fine-tuning from random init (the baseline):
       python train.py --config configs/maskalign.py:digits_scratch --workdir runs/maskalign_digits_scratch
  digits_random_mask   step 2 with random instead of attention-guided masking (the ablation)
  digits_fast          step 2 for a few steps (smoke test / CI)
Paths: --config.model.teacher=... (step 2), --config.model.pretrained=... (step 3).
"""

from __future__ import annotations

import ml_collections

from configs.common import digits_data, imagenet_data
from zoo.train.config import base_config

# The student and teacher of the digits run: the shape of configs/vit.py:digits (16 px, patch 4: a 4 x 4 grid).
DIGITS_VIT = {"img_size": 16, "patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pretrain_optimizer(config: ml_collections.ConfigDict, *, lr: float, warmup_steps: int) -> None:
    config.optimizer.lr = lr
    config.optimizer.b1, config.optimizer.b2 = 0.9, 0.95
    config.optimizer.weight_decay = 0.05
    config.optimizer.no_decay = ("distill_weights",)  # and every 1-D parameter / bias (never decayed)
    config.optimizer.warmup_steps = warmup_steps
    config.optimizer.min_lr = 1e-5 * lr / 6e-4  # the official min_lr 1e-5 at lr 6e-4
    # The teacher: no gradient, no update, no optimizer state; not saved with checkpoints (model.teacher reloads it).
    config.optimizer.frozen = (r"teacher\..*",)
    config.checkpoint_frozen = False


def _b16_in1k(config: ml_collections.ConfigDict) -> None:
    config.task = "maskalign"
    config.model = ml_collections.ConfigDict(
        {"name": "maskalign_vit_base_patch16_clip_b16", "pretrained": "", "teacher": "",
         "overrides": {"drop_path_rate": 0.1}}
    )
    data = imagenet_data(eval_batch_size=256)
    config.data = ml_collections.ConfigDict(
        {"train": data.train.to_dict(), "eval": data.eval.to_dict(), "image_size": 224, "interpolation": "bicubic",
         "crop_pct": 0.875, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale": (0.2, 1.0),
         "ratio": (3 / 4, 4 / 3), "hflip": 0.5, "eval_batch_size": 256}
    )
    config.batch_size = 1024
    steps_per_epoch = 1281167 // 1024
    config.num_train_steps = 200 * steps_per_epoch
    _pretrain_optimizer(config, lr=1.5e-4 * 1024 / 256, warmup_steps=20 * steps_per_epoch)
    config.mesh.fsdp = 1
    config.log_every = 100
    config.eval_every = 10 * steps_per_epoch
    config.checkpoint_every = 2000


def _b16_in1k_finetune(config: ml_collections.ConfigDict) -> None:
    config.model = ml_collections.ConfigDict(
        {"name": "maskalign_vit_base_patch16_ft", "pretrained": "",
         "overrides": {"num_classes": 1000, "drop_path_rate": 0.2}}
    )
    config.data = imagenet_data(eval_batch_size=1024)
    config.batch_size = 1024
    steps_per_epoch = 1281167 // 1024
    config.num_train_steps = 100 * steps_per_epoch
    config.optimizer.lr = 3e-4 * 1024 / 256
    config.optimizer.weight_decay = 0.05
    config.optimizer.layer_decay = 0.55
    config.optimizer.warmup_steps = 5 * steps_per_epoch
    config.optimizer.min_lr = 1e-6
    config.log_every = 100
    config.eval_every = 5 * steps_per_epoch
    config.checkpoint_every = 2000


def _digits(config: ml_collections.ConfigDict) -> None:
    config.task = "maskalign"
    config.model = ml_collections.ConfigDict(
        {
            "name": "maskalign_vit_base_patch16_vit_teacher",
            "pretrained": "",
            "teacher": "runs/vit_digits",
            "overrides": {
                **DIGITS_VIT, "drop_path_rate": 0.1, "mask_ratio": 0.7, "mask_type": "attention",
                # a 4-layer teacher: all its layers (the official top-5 of 12 is the last 40 %; here that is 1.6)
                "loss_weights": "mean",
                "teacher_name": "vit_tiny_patch16_224", "teacher_overrides": dict(DIGITS_VIT),
                "teacher_mean": (0.5, 0.5, 0.5), "teacher_std": (0.5, 0.5, 0.5),  # how configs/vit.py:digits trains
            },
        }
    )
    source = {"image_size": 16}
    config.data = ml_collections.ConfigDict(
        {
            "train": {"name": "opencv_digits", "split": "train", "kwargs": source},
            "eval": {"name": "opencv_digits", "split": "test", "kwargs": source},
            "image_size": 16, "interpolation": "bilinear", "crop_pct": 1.0,
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD,  # the student's input, as the official; the teacher renormalises
            "scale": (0.6, 1.0), "ratio": (0.8, 1.25), "hflip": 0.0,  # digits: mild crops, no flips
            "eval_batch_size": 500,
        }
    )  # fmt: skip
    config.batch_size = 256
    config.num_train_steps = 1500
    _pretrain_optimizer(config, lr=1.5e-3, warmup_steps=100)
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint_every = 500


def _digits_finetune(config: ml_collections.ConfigDict, pretrained: str) -> None:
    config.model = ml_collections.ConfigDict(
        {"name": "maskalign_vit_base_patch16_ft", "pretrained": pretrained,
         "overrides": {**DIGITS_VIT, "num_classes": 10, "drop_path_rate": 0.1}}
    )
    config.data = digits_data("opencv_digits", 16, eval_batch_size=500)
    config.data.train.kwargs.labels_per_class = 20
    config.data.mean, config.data.std = IMAGENET_MEAN, IMAGENET_STD  # as the pre-trained student saw them
    config.batch_size = 50
    config.num_train_steps = 400
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.layer_decay = 0.75  # 4 blocks (official 0.55 for the 12 of ViT-B)
    config.optimizer.warmup_steps = 40
    config.optimizer.min_lr = 1e-6
    config.log_every = 50
    config.eval_every = 100
    config.checkpoint_every = 400


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring)."""
    config = base_config()
    if arg in ("digits", "digits_fast", "digits_random_mask"):
        _digits(config)
        if arg == "digits_random_mask":
            config.model.overrides.mask_type = "random"
        if arg == "digits_fast":
            config.batch_size = 32
            config.num_train_steps = 6
            config.optimizer.warmup_steps = 0
            config.log_every = 1
            config.eval_every = 0
            config.checkpoint_every = 3
            config.data.eval_batch_size = 250
    elif arg == "digits_finetune":
        _digits_finetune(config, "runs/maskalign_digits/maskalign_pretrain.npz")
    elif arg == "digits_scratch":
        _digits_finetune(config, "")
    elif arg == "b16_in1k":
        _b16_in1k(config)
    elif arg == "b16_in1k_finetune":
        _b16_in1k_finetune(config)
    else:
        raise ValueError(f"unknown configs/maskalign.py variant {arg!r}; use digits, digits_fast, digits_random_mask, "
                         "digits_finetune, digits_scratch, b16_in1k or b16_in1k_finetune")
    return config
