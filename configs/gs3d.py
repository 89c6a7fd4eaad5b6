"""Plain 3D Gaussian splatting (task "gs3d", model "gs3d"): graphdeco's recipe on a COLMAP scene.

Variants (the part after the colon):
  graphdeco  the official 3DGS schedule: 30k steps, one random view per step, (1 - 0.2) L1 + 0.2 D-SSIM, Adam eps
             1e-15, lr positions 1.6e-4 -> 1.6e-6 x extent (exponential), sh_dc 2.5e-3, sh_rest 2.5e-3 / 20,
             opacity 0.05, scales 5e-3, rotations 1e-3; SH degree +1 every 1000 steps up to 3; densify every 100
             steps from 500 to 15k (grad 2e-4, percent_dense 0.01), prune opacity < 0.005 (and > 20 px / > 0.1 extent
             after step 3000), opacity reset every 3000. Test views: every 8th image, or the scene's .tsv split.
               python train.py --config configs/gs3d.py:graphdeco --workdir runs/gs3d_garden \\
                 --config.data.train.name=colmap:/data/mipnerf360/garden --config.data.train.kwargs.downscale=4
  tiny       the same recipe compressed to 300 steps (densify every 20 from 40 to 200, reset every 100, SH degree
             every 50 steps) for a small scene and CI:
               python train.py --config configs/gs3d.py:tiny --workdir runs/gs3d_tiny \\
                 --config.data.train.name=colmap:/path/to/scene
The eval split shares the train scene (data.eval.name empty: the scene's "test" split).
"""

from __future__ import annotations

import ml_collections

from zoo.train.config import base_config

# graphdeco's per-attribute learning rates (arguments/__init__.py; scaling_lr pinned to 5e-3, gsplat's value).
POSITION_LR, POSITION_LR_FINAL = 1.6e-4, 1.6e-6
ATTRIBUTE_LRS = {"sh_dc": 2.5e-3, "sh_rest": 2.5e-3 / 20.0, "opacity_logits": 0.05, "log_scales": 5e-3, "quats": 1e-3}


def _optimizer(config: ml_collections.ConfigDict) -> None:
    opt = config.optimizer
    opt.name = "adamw"
    opt.weight_decay = 0.0  # plain Adam
    opt.b1, opt.b2, opt.eps = 0.9, 0.999, 1e-15
    opt.schedule = "constant"
    opt.lr = 1e-3  # the default group only holds the screen-gradient probe (its gradient is zeroed) and extras
    # Positions are stored in scene-extent units (models/gs3d/pool.py), so this lr is graphdeco's lr x extent.
    groups = [{"pattern": "positions", "lr": POSITION_LR, "schedule": "exponential", "lr_final": POSITION_LR_FINAL}]
    groups += [{"pattern": name, "lr": lr, "schedule": "constant"} for name, lr in ATTRIBUTE_LRS.items()]
    opt.groups = tuple(groups)


def _graphdeco(config: ml_collections.ConfigDict) -> None:
    from models.gs3d.tasks import default_gaussians_config

    config.task = "gs3d"
    config.model = ml_collections.ConfigDict({"name": "gs3d", "pretrained": "", "overrides": {}})
    config.data = ml_collections.ConfigDict(
        {
            "train": {"name": "colmap:/path/to/scene", "split": "train", "kwargs": {}},
            "eval": {"name": "", "split": "test", "kwargs": {}},
            "eval_batch_size": 1,
        }
    )
    config.gaussians = default_gaussians_config()
    config.batch_size = 1
    config.num_train_steps = 30_000
    _optimizer(config)
    config.log_every = 100
    config.eval_every = 7_000
    config.checkpoint_every = 7_000


def get_config(arg: str = "graphdeco") -> ml_collections.ConfigDict:
    """Config for the variant named by `arg` (see the module docstring)."""
    config = base_config()
    if arg in ("graphdeco", "tiny"):
        _graphdeco(config)
        if arg == "tiny":
            config.num_train_steps = 300
            gs = config.gaussians
            gs.densify_from, gs.densify_until, gs.densify_every = 40, 200, 20
            gs.opacity_reset_every = 100
            gs.sh_degree_interval = 50
            config.log_every = 20
            config.eval_every = 0
            config.checkpoint_every = 0
            config.async_checkpointing = False
    else:
        raise ValueError(f"unknown configs/gs3d.py variant {arg!r}; use graphdeco or tiny")
    return config
