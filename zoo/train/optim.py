"""optax from config: AdamW/SGD, warmup + cosine, clipping, weight-decay masks, layer-wise LR decay, frozen params.

Masks and per-parameter scales are functions of the parameter's dotted NNX path ("blocks.3.attn.qkv.kernel"), so a
config says which parameters are frozen or undecayed with regular expressions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Parameters that are never decayed, whatever the config adds (timm / MAE convention): 1-D tensors (biases, norms)
# are excluded by rank; these names cover the rest.
DEFAULT_NO_DECAY = (r".*pos_embed.*", r".*cls_token.*", r".*class_embedding.*", r".*positional_embedding.*")


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


def build_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """`warmup_cosine` (linear warmup to lr, cosine to min_lr), `warmup_linear`, or `constant`."""
    lr = config.lr
    warmup = int(config.get("warmup_steps", 0))
    min_lr = float(config.get("min_lr", 0.0))
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
    raise ValueError(f"unknown schedule {name!r}; use warmup_cosine, warmup_linear or constant")


def scale_by_tree(scales_fn: Callable) -> optax.GradientTransformation:
    """Multiply each update by a constant per parameter (layer-wise LR decay)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        scales = scales_fn(updates)
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)


def build_optimizer(
    config: ml_collections.ConfigDict,
    total_steps: int,
    *,
    layer_id_fn: Callable[[str], int] | None = None,
    num_layers: int | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation for `config.optimizer` and its learning-rate schedule.

    Config keys: name (adamw|sgd), lr, b1, b2, eps, momentum, weight_decay, no_decay (regexes), clip_norm,
    layer_decay (with the task's `layer_id_fn(path)` and `num_layers`), frozen (regexes), schedule, warmup_steps,
    min_lr.
    """
    schedule = build_schedule(config, total_steps)
    no_decay = _matches(tuple(config.get("no_decay", ())) + DEFAULT_NO_DECAY)
    decay_mask = _tree_of(lambda name, x: x.ndim > 1 and not no_decay(name))
    name = config.get("name", "adamw")
    if name == "adamw":
        core = optax.adamw(
            schedule,
            b1=config.get("b1", 0.9),
            b2=config.get("b2", 0.999),
            eps=config.get("eps", 1e-8),
            weight_decay=config.get("weight_decay", 0.0),
            mask=decay_mask,
        )
    elif name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(config.get("weight_decay", 0.0), mask=decay_mask),
            optax.sgd(schedule, momentum=config.get("momentum", 0.9), nesterov=config.get("nesterov", False)),
        )
    else:
        raise ValueError(f"unknown optimizer {name!r}; use adamw or sgd")

    parts = []
    if config.get("clip_norm", 0.0):
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    parts.append(core)
    layer_decay = config.get("layer_decay", 0.0)
    if layer_decay:
        if layer_id_fn is None or num_layers is None:
            raise ValueError("optimizer.layer_decay needs a task whose model defines layer ids (layer_id_fn)")
        parts.append(
            scale_by_tree(_tree_of(lambda name, x: layer_decay ** (num_layers + 1 - layer_id_fn(name))))
        )
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]

    frozen_patterns = tuple(config.get("frozen", ()))
    if frozen_patterns:
        frozen = _matches(frozen_patterns)
        tx = optax.multi_transform(
            {"train": tx, "frozen": optax.set_to_zero()},
            _tree_of(lambda name, x: "frozen" if frozen(name) else "train"),
        )
    return tx, schedule
