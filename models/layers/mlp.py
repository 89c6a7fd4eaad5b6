"""The transformer MLP: fc1 -> activation -> dropout -> fc2 -> dropout (timm `Mlp`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers.activations import get_activation
from models.layers.drop import Dropout
from models.layers.sharding import SPEC_COLUMN_PARALLEL, SPEC_ROW_PARALLEL, partitioned, trunc_normal_002, zeros

Init = Callable[..., jax.Array]


class Mlp(nnx.Module):
    """fc1 (column-parallel) -> activation -> fc2 (row-parallel), with dropout after each (timm `Mlp`).

    `act` is a name from `models.layers.get_activation` ("gelu" is torch's exact erf GELU) or a callable.
    `fc1_init` / `fc2_init` / `bias_init` are the fresh-weight initialisers (ViT: trunc normal .02; CLIP: normal with
    std width^-0.5); they do not matter for converted checkpoints. `out_dim` defaults to `dim`.
    """

    def __init__(
        self, dim: int, hidden_dim: int, out_dim: int | None = None, *, act: str | Callable = "gelu",
        drop_rate: float = 0.0, use_bias: bool = True, fc1_init: Init = trunc_normal_002, fc2_init: Init | None = None,
        bias_init: Init = zeros, dtype: Any = None, param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        common = {"use_bias": use_bias, "bias_init": bias_init, "dtype": dtype, "param_dtype": param_dtype,
                  "rngs": rngs}
        self.act = get_activation(act)
        self.fc1 = nnx.Linear(dim, hidden_dim, kernel_init=partitioned(fc1_init, SPEC_COLUMN_PARALLEL), **common)
        self.fc2 = nnx.Linear(hidden_dim, dim if out_dim is None else out_dim,
                              kernel_init=partitioned(fc2_init or fc1_init, SPEC_ROW_PARALLEL), **common)
        self.drop = Dropout(drop_rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        x = self.drop(self.act(self.fc1(x)), train=train, rngs=rngs)
        return self.drop(self.fc2(x), train=train, rngs=rngs)
