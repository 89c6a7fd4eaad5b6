"""Activations with the official models' numerics: torch's exact (erf) GELU and OpenAI CLIP's quick GELU."""

from __future__ import annotations

from collections.abc import Callable

import jax


def gelu(x: jax.Array) -> jax.Array:
    """torch `nn.GELU()`: the exact erf form (jax's default is the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x): the activation OpenAI CLIP was trained with."""
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def get_activation(name: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The activation called `name` (a callable passes through); an unknown name lists the known ones."""
    if callable(name):
        return name
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]
