"""optax from config: AdamW/SGD, schedules, clipping, weight-decay masks, layer-wise LR decay, parameter groups, frozen.

Masks, groups and per-parameter scales are functions of the parameter's dotted NNX path ("blocks.3.attn.qkv.kernel"),
so a config says which parameters are frozen, undecayed or in a group with regular expressions (`re.fullmatch`).

Parameter groups (`optimizer.groups`, a tuple of dicts): each has a `pattern` and any of the keys in `GROUP_KEYS`;
`lr` is absolute, `lr_mult` multiplies the top-level lr; a group's unset keys take the top-level values. The first
group whose pattern matches a parameter takes it; parameters no group matches use the top-level settings (the
"default" group, whose schedule is the logged `lr`). Global-norm clipping sees every trainable gradient (it runs
before the groups split them) and layer-wise LR decay multiplies every group's updates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

# Parameters that are never decayed, whatever the config adds (timm / MAE convention): 1-D tensors (biases, norms)
# are excluded by rank; these names cover the rest.
DEFAULT_NO_DECAY = (r".*pos_embed.*", r".*cls_token.*", r".*class_embedding.*", r".*positional_embedding.*")

# The keys an `optimizer.groups` entry may set (strict config validation reads this too).
GROUP_KEYS = ("pattern", "lr", "lr_mult", "weight_decay", "schedule", "warmup_steps", "min_lr", "lr_final", "b1", "b2",
              "eps", "momentum", "nesterov")
SCHEDULES = ("warmup_cosine", "warmup_linear", "constant", "exponential")


def path_string(path) -> str:
    """'blocks.0.attn.qkv.kernel' for a tree path (NNX Variable `.value` suffixes removed)."""
    text = jax.tree_util.keystr(tuple(path), simple=True, separator=".")
    return text.removesuffix(".value")


def _tree_of(fn: Callable[[str, jax.Array], object]):
    def build(params):
        return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_string(p), x), params)

    return build


def _matches(patterns: Sequence[str]) -> Callable[[str], bool]:
    compiled = [re.compile(p) for p in patterns]
    return lambda name: any(c.fullmatch(name) for c in compiled)


def trainable_filter(frozen_patterns: Sequence[str]):
    """The nnx filter of the parameters the optimizer trains: `nnx.Param`s whose dotted path no frozen regex matches.

    The trainer builds `nnx.Optimizer(..., wrt=this)` and differentiates only these, so frozen parameters carry no
    gradients and no optimizer state (they stay in the model state: sharded, checkpointed, used in the forward).
    """
    if not frozen_patterns:
        return nnx.Param
    frozen = _matches(tuple(frozen_patterns))
    return nnx.All(nnx.Param, lambda path, value: not frozen(".".join(str(p) for p in path)))


def build_schedule(config: Mapping[str, Any] | ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """`warmup_cosine` (linear warmup to lr, cosine to min_lr), `warmup_linear`, `constant`, or `exponential`.

    `exponential` goes from `lr` to `lr_final` log-linearly over the run (after an optional linear warmup), as
    3D Gaussian splatting's position learning rate does.
    """
    lr = float(config["lr"])
    warmup = int(config.get("warmup_steps", 0) or 0)
    min_lr = float(config.get("min_lr", 0.0) or 0.0)
    name = config.get("schedule", "warmup_cosine")
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1), end_value=min_lr
        )
    if name == "warmup_linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.linear_schedule(lr, min_lr, max(total_steps - warmup, 1))],
            [warmup],
        )
    if name == "exponential":
        lr_final = float(config.get("lr_final", 0.0) or 0.0)
        if lr <= 0 or lr_final <= 0:
            raise ValueError(f"the exponential schedule needs lr > 0 and lr_final > 0 (got lr={lr}, lr_final={lr_final})")
        decay_steps = max(total_steps - warmup, 1)

        def exponential(step):
            fraction = jnp.clip(jnp.asarray(step, jnp.float32) / decay_steps, 0.0, 1.0)
            return jnp.exp((1.0 - fraction) * jnp.log(lr) + fraction * jnp.log(lr_final))

        if not warmup:
            return exponential
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), exponential], [warmup])
    raise ValueError(f"unknown schedule {name!r}; use {', '.join(SCHEDULES)}")


def scale_by_tree(scales_fn: Callable) -> optax.GradientTransformation:
    """Multiply each update by a constant per parameter (layer-wise LR decay)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        scales = scales_fn(updates)
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)


def _as_dict(config) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def _core(settings: Mapping[str, Any], schedule: optax.Schedule, decay_mask) -> optax.GradientTransformation:
    """The base optimizer (adamw or sgd) with its weight decay for one group's settings."""
    name = settings.get("name", "adamw")
    if name == "adamw":
        return optax.adamw(
            schedule,
            b1=settings.get("b1", 0.9),
            b2=settings.get("b2", 0.999),
            eps=settings.get("eps", 1e-8),
            weight_decay=settings.get("weight_decay", 0.0),
            mask=decay_mask,
        )
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(settings.get("weight_decay", 0.0), mask=decay_mask),
            optax.sgd(schedule, momentum=settings.get("momentum", 0.9), nesterov=settings.get("nesterov", False)),
        )
    raise ValueError(f"unknown optimizer {name!r}; use adamw or sgd")


def group_settings(config, group: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer settings of one `optimizer.groups` entry: the top-level settings with the group's keys on top."""
    group = _as_dict(group)
    unknown = sorted(set(group) - set(GROUP_KEYS))
    if unknown or "pattern" not in group:
        raise ValueError(f"optimizer.groups entry {group} has unknown keys {unknown} or no 'pattern'; "
                         f"allowed: {', '.join(GROUP_KEYS)}")
    if "lr" in group and "lr_mult" in group:
        raise ValueError(f"optimizer.groups entry {group['pattern']!r} sets both lr and lr_mult; set one")
    settings = {k: v for k, v in _as_dict(config).items() if k != "groups"}
    settings.update({k: v for k, v in group.items() if k not in ("pattern", "lr_mult")})
    if "lr_mult" in group:
        settings["lr"] = float(config["lr"]) * float(group["lr_mult"])
    return settings


def build_optimizer(
    config: ml_collections.ConfigDict,
    total_steps: int,
    *,
    layer_id_fn: Callable[[str], int] | None = None,
    max_layer_id: int | None = None,
    num_layers: int | None = None,
    mask_frozen: bool = True,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation for `config.optimizer` and the default group's learning-rate schedule.

    Config keys: name (adamw|sgd), lr, b1, b2, eps, momentum, nesterov, weight_decay, no_decay (regexes), clip_norm
    (global norm over all trainable params), layer_decay (scale `layer_decay ** (max_layer_id - layer_id_fn(path))`;
    `num_layers` is accepted for `max_layer_id = num_layers + 1`), frozen (regexes), schedule, warmup_steps, min_lr,
    lr_final, groups (see the module docstring).

    `mask_frozen=True` zeroes the updates of frozen parameters inside the transformation (for a tree that contains
    them); the trainer passes False because it keeps frozen parameters out of the optimized tree altogether.
    """
    schedule = build_schedule(config, total_steps)
    no_decay = _matches(tuple(config.get("no_decay", ())) + DEFAULT_NO_DECAY)
    decay_mask = _tree_of(lambda name, x: x.ndim > 1 and not no_decay(name))
    core = _core(_as_dict(config), schedule, decay_mask)

    groups = [_as_dict(g) for g in (config.get("groups", ()) or ())]
    frozen_patterns = tuple(config.get("frozen", ())) if mask_frozen else ()
    if groups or frozen_patterns:
        transforms = {"default": core}
        for index, group in enumerate(groups):
            settings = group_settings(config, group)
            transforms[f"group{index}"] = _core(settings, build_schedule(settings, total_steps), decay_mask)
        group_matchers = [re.compile(g["pattern"]) for g in groups]
        frozen = _matches(frozen_patterns)
        if frozen_patterns:
            transforms["frozen"] = optax.set_to_zero()

        def label(name: str, x) -> str:
            if frozen_patterns and frozen(name):
                return "frozen"
            for index, matcher in enumerate(group_matchers):
                if matcher.fullmatch(name):
                    return f"group{index}"
            return "default"

        core = optax.multi_transform(transforms, _tree_of(label))

    parts = []
    if config.get("clip_norm", 0.0):
        parts.append(optax.clip_by_global_norm(config.clip_norm))  # before the groups split the tree: a global norm
    parts.append(core)
    layer_decay = config.get("layer_decay", 0.0)
    if layer_decay:
        if max_layer_id is None and num_layers is not None:
            max_layer_id = num_layers + 1
        if layer_id_fn is None or max_layer_id is None:
            raise ValueError("optimizer.layer_decay needs a task whose model defines layer ids (layer_id_fn)")
        parts.append(scale_by_tree(_tree_of(lambda name, x: layer_decay ** (max_layer_id - layer_id_fn(name)))))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
    return tx, schedule
