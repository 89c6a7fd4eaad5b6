"""FcaFormer image classification (models/fcaformer; recipe: the official image_classification/scripts/fca_l*.sh).

Variants (the part after the colon):
  digits       a reduced-width L1-like FcaFormer on opencv-doc's 5000 embedded real handwritten digits at 32x32
               (no download), CPU in a few minutes:
                 python train.py --config configs/fcaformer.py:digits --workdir runs/fcaformer_digits
  digits_fast  the same model, a few steps (smoke test / CI):
                 python train.py --config configs/fcaformer.py:digits_fast --workdir runs/fcaformer_digits_fast
  l1_in1k, l2_in1k, l3_in1k, l4_in1k
               FcaFormer-L1..L4 on ImageNet-1k with the paper's recipe, from a TFDS-prepared imagenet2012
               (`tfds build imagenet2012` with the archives in the manual dir):
                 python train.py --config configs/fcaformer.py:l2_in1k --workdir runs/fcaformer_l2
               a non-default TFDS data dir:
                 ... --config.data.train.kwargs.data_dir=/data/tfds --config.data.eval.kwargs.data_dir=/data/tfds
               an image-folder tree instead (<root>/train/<wnid>/*.JPEG, <root>/val/<wnid>/*.JPEG):
                 python train.py --config configs/fcaformer.py:l2_in1k --workdir runs/fcaformer_l2 \\
                   --config.data.train.name=folder:/data/imagenet --config.data.eval.name=folder:/data/imagenet \\
                   --config.data.eval.split=val
               a different global batch: the lr scales linearly (2e-3 x batch / 1024) and the epoch-based step counts
               (300 epochs, 20 warmup, eval every 5) are recomputed for the batch:
                 python train.py --config configs/fcaformer.py:l2_in1k:512 --workdir runs/fcaformer_l2_b512
               bf16 compute (params stay f32): --config.dtype=bfloat16

ImageNet recipe (official `main.py` defaults + `scripts/fca_l{1..4}.sh`, spec section 3.5): 8 GPUs x 128 = batch
1024, AdamW lr 2e-3 (absolute), betas (0.9, 0.999), eps 1e-8, weight decay 0.05 on everything but 1-D tensors and
biases, 300 epochs, 20 warmup epochs (linear from 0), cosine to min lr 1e-6, per step; drop path 0.0 / 0.1 / 0.2 /
0.4 for L1..L4; EMA 0.9999 (evaluated, `model_ema_eval`); RandAugment rand-m9-mstd0.5-inc1 (colour jitter unused when
RandAugment is on, as in timm), mixup 0.8, cutmix 1.0 (prob 1.0, switch 0.5, per batch), label smoothing 0.1,
random erasing 0.25 (pixel mode), random-resized crop (0.08-1, 3/4-4/3) with horizontal flip, bicubic; eval resize
256 and centre crop 224 (crop_pct 0.875); no gradient clipping, no layer decay.
"""

from __future__ import annotations

import ml_collections

from configs.common import digits_data, imagenet_data
from zoo.train.config import base_config

IMAGENET_TRAIN_IMAGES = 1281167
OFFICIAL_BATCH = 1024  # 8 GPUs x 128
OFFICIAL_LR = 2e-3  # at OFFICIAL_BATCH, absolute (main.py uses --lr as given, no linear scaling rule)
DROP_PATH = {"l1": 0.0, "l2": 0.1, "l3": 0.2, "l4": 0.4}

# The official optimizer (ConvNeXt-style optim_factory.get_parameter_groups) puts a tensor in the no-decay group when
# `len(param.shape) == 1 or name.endswith(".bias")`; FcaFormer defines no `no_weight_decay()`. So `attention_biases`
# (heads, N), `s_token_bias` (1, heads, 1, N_s), `s_scale_factors` (1, N_s, 1) and all kernels ARE decayed. In our NNX
# paths the 1-D tensors are the biases (`.bias`), the LayerNorm / BatchNorm scales (`.scale`; torch `.weight`) and the
# layer scales (`gamma` in the ConvNeXt blocks, `gamma_1` / `gamma_2` in the FcaBlocks). The trainer already skips
# every tensor of rank <= 1; these regexes name the same set explicitly, so the split does not depend on the rank rule
# (a test checks both against the real model).
NO_DECAY = (r".*\.bias", r".*\.scale", r".*\.gamma(_[12])?")

# A reduced-width FcaFormer-L1 (L1: dims 64/128/192/320, depths 2/2/6/2, heads 6/10) for 32x32 digits. At 32 px the
# stem leaves 8x8 tokens, the transformer stages run at 2x2 (one cross token per earlier block) and 1x1.
DIGITS_MODEL = {
    "img_size": 32,
    "num_classes": 10,
    "embed_dims": (32, 64, 96, 160),
    "depths": (2, 2, 6, 2),
    "num_heads": (0, 0, 3, 5),  # head dim 32 as in every official variant; the first two entries are unused
    "drop_path_rate": 0.0,
}


def _digits(config: ml_collections.ConfigDict) -> None:
    config.model = ml_collections.ConfigDict(
        {"name": "fcaformer_l1", "pretrained": "", "overrides": dict(DIGITS_MODEL)}
    )
    config.data = digits_data("opencv_digits", 32, eval_batch_size=200)
    # The ImageNet optimizer recipe, shortened: AdamW 2e-3 / wd 0.05 / the official no-decay set, warmup + cosine.
    config.batch_size = 128
    config.num_train_steps = 400  # ~13 epochs of the 4000 training digits
    config.optimizer.lr = OFFICIAL_LR
    config.optimizer.weight_decay = 0.05
    config.optimizer.no_decay = NO_DECAY
    config.optimizer.warmup_steps = 40
    config.optimizer.min_lr = 1e-6
    config.log_every = 25
    config.eval_every = 200
    config.checkpoint_every = 200


def _in1k(config: ml_collections.ConfigDict, size: str, batch_size: int) -> None:
    config.model = ml_collections.ConfigDict(
        {
            "name": f"fcaformer_{size}",
            "pretrained": "",
            "overrides": {"num_classes": 1000, "drop_path_rate": DROP_PATH[size]},
        }
    )
    config.data = imagenet_data(eval_batch_size=1024)
    config.batch_size = batch_size
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // batch_size  # the official loader drops the last partial batch
    config.num_train_steps = 300 * steps_per_epoch
    config.optimizer.lr = OFFICIAL_LR * batch_size / OFFICIAL_BATCH  # linear scaling; exactly 2e-3 at 1024
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.05
    config.optimizer.no_decay = NO_DECAY
    config.optimizer.clip_norm = 0.0
    config.optimizer.schedule = "warmup_cosine"
    config.optimizer.warmup_steps = 20 * steps_per_epoch
    config.optimizer.min_lr = 1e-6
    config.ema_decay = 0.9999
    config.log_every = 100
    config.eval_every = 5 * steps_per_epoch
    config.checkpoint_every = 2000


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring); `l2_in1k:512` sets the global batch."""
    variant, _, batch = arg.partition(":")
    config = base_config()
    if variant in ("digits", "digits_fast"):
        _digits(config)
        if variant == "digits_fast":
            # Small batches and enough steps for the BatchNorm running averages (momentum 0.9, from mean 0 / var 1) to
            # forget their init: the depthwise-conv BNs see true variances ~5e-4 at this stage, so a 0.9**60 = 2e-3
            # residue of the init variance still makes eval mode predict one class; 0.9**100 = 3e-5 does not.
            config.batch_size = 16
            config.num_train_steps = 100
            config.optimizer.warmup_steps = 10
            config.log_every = 1
            config.eval_every = 0
            config.checkpoint_every = 50
    elif variant in ("l1_in1k", "l2_in1k", "l3_in1k", "l4_in1k"):
        _in1k(config, variant[:2], int(batch) if batch else OFFICIAL_BATCH)
    else:
        raise ValueError(
            f"unknown configs/fcaformer.py variant {arg!r}; use digits, digits_fast or l1_in1k..l4_in1k[:batch]"
        )
    return config
