"""Trainer config defaults and validation (configs/*.py start from `base_config()`).

Strict configs: every key of a config must be read by someone, the trainer (the keys of `base_config()`, plus
`GROUP_KEYS` in each `optimizer.groups` entry) or the task (its `config_keys`, see `zoo.tasks.base.Task`);
`validate_config` names an unknown key and the closest valid one. Free-form sub-dicts (`model.overrides`,
`data.*.kwargs`) go to their consumers unchecked.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

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
            "name": "adamw",  # adamw | sgd
            "lr": 1e-3,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "momentum": 0.9,  # sgd
            "nesterov": False,  # sgd
            "weight_decay": 0.05,
            "no_decay": (),  # regexes (fullmatch on "blocks.0.attn.qkv.kernel"); rank <= 1 is never decayed
            "clip_norm": 0.0,  # global norm over all trainable gradients; 0 disables
            "layer_decay": 0.0,  # lr x layer_decay ** (max_layer_id - layer_id), ids from the model's layer_id(path)
            # Regexes of frozen parameters: no gradient, no update, no optimizer state (they stay in the model state).
            "frozen": (),
            # Parameter groups, first match wins: ({"pattern": regex, "lr" or "lr_mult", "weight_decay", "schedule",
            # "warmup_steps", "min_lr", "lr_final", "b1", "b2", "eps", "momentum", "nesterov"}, ...); unmatched
            # parameters use the settings above, whose schedule is the logged lr.
            "groups": (),
            "accumulation_steps": 1,
            "schedule": "warmup_cosine",  # warmup_cosine | warmup_linear | constant | exponential
            "warmup_steps": 0,
            "min_lr": 0.0,  # end of warmup_cosine / warmup_linear
            "lr_final": 0.0,  # end of exponential (log-linear from lr over the run), must be > 0 for it
        }
    )
    config.ema_decay = 0.0  # 0 disables EMA; with EMA, eval and exported checkpoints use the EMA weights
    config.log_every = 50
    config.eval_every = 0  # 0: only at the end
    config.checkpoint_every = 0  # 0: only at the end (and on SIGTERM/SIGINT)
    config.keep_checkpoints = 2
    config.async_checkpointing = True
    # False: frozen parameters (optimizer.frozen) are left out of checkpoints; resume and create_model(pretrained=...)
    # rebuild them from their source, config.model.pretrained (the task's build_pretrained) or the seeded init.
    config.checkpoint_frozen = True
    return config


def _spec_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return {k: _spec_of(v) if isinstance(v, ml_collections.ConfigDict) else None for k, v in config.items()}


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _merge(into[key], value)
        else:
            into.setdefault(key, None)
    return into


def valid_keys(task_cls: type | None = None) -> dict[str, Any]:
    """The keys a config may hold, nested: the trainer's (`base_config()`) merged with `task_cls`'s `config_keys`.

    A value None is a leaf (or a free-form dict that is not checked); a dict is a section whose keys are checked.
    """
    spec = _spec_of(base_config())
    if task_cls is not None:
        from zoo.tasks.base import merged_config_keys

        _merge(spec, merged_config_keys(task_cls))
    return spec


def _unknown(key: str, prefix: str, valid) -> str:
    full = f"{prefix}{key}"
    close = difflib.get_close_matches(key, list(valid), n=1)
    if close:
        return f"unknown config key {full!r}; did you mean {prefix + close[0]!r}?"
    section = prefix.rstrip(".") or "the top level"
    return f"unknown config key {full!r}; valid keys of {section}: {', '.join(sorted(map(str, valid)))}"


def config_key_errors(config: Mapping[str, Any] | ml_collections.ConfigDict, spec: Mapping[str, Any],
                      prefix: str = "") -> list[str]:
    """One message per key of `config` that `spec` (see `valid_keys`) does not allow."""
    from zoo.train.optim import GROUP_KEYS

    errors = []
    for key in config:
        value = config[key]
        if key not in spec:
            errors.append(_unknown(str(key), prefix, spec))
        elif f"{prefix}{key}" == "optimizer.groups":
            for index, group in enumerate(value or ()):
                group_prefix = f"optimizer.groups[{index}]."
                errors += [_unknown(str(k), group_prefix, GROUP_KEYS) for k in group if k not in GROUP_KEYS]
                if "pattern" not in group:
                    errors.append(f"config key {group_prefix}pattern is missing (the regex of the group's params)")
        elif isinstance(spec[key], dict) and isinstance(value, (Mapping, ml_collections.ConfigDict)):
            errors += config_key_errors(value, spec[key], f"{prefix}{key}.")
    return errors


def validate_config(config: ml_collections.ConfigDict, task_cls: type | None = None) -> None:
    """Raise a ValueError naming what is missing or wrong (an unknown key with the closest valid one), before any
    work starts. `task_cls` defaults to the task `config.task` names."""
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config lacks required keys {missing}; start configs from zoo.train.config.base_config()")
    if task_cls is None:
        from zoo.tasks import get_task

        task_cls = get_task(config.task)
    errors = config_key_errors(config, valid_keys(task_cls))
    if errors:
        raise ValueError("\n".join(errors) + f"\n(the keys the trainer and task {task_cls.__name__} read; a task "
                         "declares its own in its config_keys)")
    if config.batch_size <= 0 or config.num_train_steps <= 0:
        raise ValueError("batch_size and num_train_steps must be positive")
    if "model" in config and "name" in config.model:
        import zoo

        zoo.get_model_entry(config.model.name)
