"""Trainer config defaults and validation (configs/*.py start from `base_config()`)."""

from __future__ import annotations

import ml_collections

REQUIRED = ("task", "seed", "batch_size", "num_train_steps", "mesh", "optimizer")


def base_config() -> ml_collections.ConfigDict:
    """The trainer's own keys with their defaults; a config file fills in the task's sections."""
    config = ml_collections.ConfigDict()
    config.task = "classification"
    config.seed = 0
    config.batch_size = 128  # global, over all hosts and devices
    config.num_train_steps = 1000
    config.dtype = "float32"  # compute dtype passed to models that take one; params stay f32
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
    config.fsdp_min_size = 2**14  # parameters with fewer values stay replicated under fsdp
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "lr": 1e-3,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.05,
            "no_decay": (),
            "clip_norm": 0.0,
            "layer_decay": 0.0,
            "frozen": (),
            "accumulation_steps": 1,
            "schedule": "warmup_cosine",
            "warmup_steps": 0,
            "min_lr": 0.0,
        }
    )
    config.ema_decay = 0.0  # 0 disables EMA; with EMA, eval and exported checkpoints use the EMA weights
    config.log_every = 50
    config.eval_every = 0  # 0: only at the end
    config.checkpoint_every = 0  # 0: only at the end (and on SIGTERM/SIGINT)
    config.keep_checkpoints = 2
    config.async_checkpointing = True
    return config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise a ValueError naming what is missing or wrong, before any work starts."""
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config lacks required keys {missing}; start configs from zoo.train.config.base_config()")
    from zoo.tasks import get_task

    get_task(config.task)
    if config.batch_size <= 0 or config.num_train_steps <= 0:
        raise ValueError("batch_size and num_train_steps must be positive")
    if "model" in config and "name" in config.model:
        import zoo

        zoo.get_model_entry(config.model.name)
