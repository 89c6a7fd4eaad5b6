"""Building blocks shared by the zoo's transformers: drop path, sharding-aware initialisers, input checks.

Sharding metadata: the big kernels carry mesh-axis names ("model") through `nnx.with_partitioning`. Flax 0.12 shards
variables eagerly when they carry `out_sharding`, which needs a mesh; `sharding_scope()` turns eager sharding on only
when the current mesh has a "model" axis, so a model still builds in a notebook or a test with no mesh, and
`nnx.get_partition_spec(nnx.state(model))` reports the same specs either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Mesh-axis specs of the kernels (flax layout: (in, out)). The trainer adds the "fsdp" axis itself.
SPEC_COLUMN_PARALLEL = (None, "model")  # attention qkv, MLP fc1: output features split over "model"
SPEC_ROW_PARALLEL = ("model", None)  # attention out-proj, MLP fc2: input features split over "model"

trunc_normal_002 = nnx.initializers.truncated_normal(stddev=0.02)


def partitioned(init: Callable[..., jax.Array], spec: tuple[str | None, ...]) -> Callable[..., jax.Array]:
    """`init` with mesh-axis metadata `spec` (see the module docstring)."""
    return nnx.with_partitioning(init, spec)


def _mesh_has_model_axis() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return (not mesh.empty) and "model" in mesh.axis_names


@contextlib.contextmanager
def sharding_scope():
    """Build variables born sharded under a mesh with a "model" axis, and unsharded (metadata kept) otherwise."""
    with nnx.use_eager_sharding(nnx.using_eager_sharding() and _mesh_has_model_axis()):
        yield


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

    Kept samples are scaled by 1 / (1 - rate), as timm's `DropPath(scale_by_keep=True)`.
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


class LayerScale(nnx.Module):
    """Per-channel learnable scale of a residual branch (CaiT / timm `ls1`, `ls2`), stored as `gamma`."""

    def __init__(self, dim: int, init_value: float, *, param_dtype: Any = jnp.float32):
        self.gamma = nnx.Param(jnp.full((dim,), init_value, dtype=param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


def check_image_input(x: Any, *, img_size: tuple[int, int], in_chans: int, model: str) -> None:
    """Raise a ValueError saying what was expected when `x` is not a float NHWC batch of the model's size."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    want = f"a float array of shape (batch, {img_size[0]}, {img_size[1]}, {in_chans}) (NHWC)"
    if shape is None or dtype is None:
        raise ValueError(f"{model} expects {want}; got {type(x).__name__}")
    if len(shape) != 4:
        hint = " (add a batch axis: x[None])" if len(shape) == 3 else ""
        raise ValueError(f"{model} expects {want}; got rank {len(shape)} shape {tuple(shape)}{hint}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{model} expects {want}; got dtype {dtype}. Convert images to float and normalise them with the "
            "mean/std of zoo.pretrained_cfg(name)"
        )
    if tuple(shape[1:]) != (img_size[0], img_size[1], in_chans):
        hint = ""
        if shape[1] == in_chans and shape[3] != in_chans:
            hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))"
        elif shape[3] == in_chans:
            hint = f" (build the model with img_size={tuple(shape[1:3])} to run at another resolution)"
        raise ValueError(f"{model} expects {want}; got shape {tuple(shape)}{hint}")
