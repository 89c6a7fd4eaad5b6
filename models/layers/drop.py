"""Dropout and stochastic depth driven by a `train` flag, holding RNG state only when they can drop something."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def dropout_stream(rate: float, rngs: nnx.Rngs | None) -> Any:
    """A forked "dropout" stream when `rate` > 0, else None: a model without dropout holds no RNG state."""
    if rate > 0 and rngs is not None:
        return rngs["dropout"].fork()
    return None


def _call_stream(rngs: nnx.Rngs | nnx.RngStream | None, own: Any, owner: str) -> Any:
    if isinstance(rngs, nnx.Rngs):
        return rngs["dropout"]
    if rngs is not None:
        return rngs
    if own is None:
        raise ValueError(
            f"{owner} needs random numbers in training mode: build the model with rngs=nnx.Rngs(params=..., "
            "dropout=...) or pass rngs=... to the call"
        )
    return own


class DropPath(nnx.Module):
    """Stochastic depth: drops a whole residual branch per sample with probability `rate` (training only).

    Kept samples are scaled by 1 / (1 - rate), as timm's `DropPath(scale_by_keep=True)`. Each call draws anew, so one
    module can serve both branches of a block (as the official FcaFormer's single `drop_path`).
    """

    def __init__(self, rate: float, *, rngs: nnx.Rngs | None = None):
        self.rate = float(rate)
        self.rngs = nnx.data(dropout_stream(self.rate, rngs))

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | nnx.RngStream | None = None):
        if not train or self.rate == 0.0:
            return x
        key = _call_stream(rngs, self.rngs, "DropPath")()
        keep_prob = 1.0 - self.rate
        keep = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))


class Dropout(nnx.Module):
    """`nnx.Dropout` driven by a `train` flag, holding a "dropout" stream only when `rate` > 0."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs | None = None):
        self.rate = float(rate)
        self.rngs = nnx.data(dropout_stream(self.rate, rngs))
        self.dropout = nnx.Dropout(self.rate)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: nnx.Rngs | nnx.RngStream | None = None):
        if not train or self.rate == 0.0:
            return x
        return self.dropout(x, deterministic=False, rngs=_call_stream(rngs, self.rngs, "Dropout"))
