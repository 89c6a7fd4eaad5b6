"""torch-exact LayerNorm and LayerScale."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def layer_norm(dim: int, *, eps: float, dtype: Any = None, param_dtype: Any = jnp.float32, use_bias: bool = True,
               rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over the last (channel) axis with torch's numerics: `eps` as the official model sets it (torch's
    default is 1e-5, timm ViTs use 1e-6) and the two-pass variance (flax's fast E[x^2] - E[x]^2 loses digits)."""
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias,
                         use_fast_variance=False, rngs=rngs)


class LayerScale(nnx.Module):
    """Per-channel learnable scale of a residual branch (CaiT / timm `ls1`, `ls2`), stored as `gamma`."""

    def __init__(self, dim: int, init_value: float, *, param_dtype: Any = jnp.float32):
        self.gamma = nnx.Param(jnp.full((dim,), init_value, dtype=param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)
