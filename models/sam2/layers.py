"""SAM2's own small blocks: the n-layer `MLP` of its heads, conv / linear factories, `KeyStream`, resize matrices.

The blocks every family shares (attention, the two-layer `Mlp`, `gelu`, `layer_norm`, `Buffer`, `PatchEmbed`) come
from `models.layers`; what stays here is specific to SAM2.

Resizes are expressed as dense interpolation matrices computed in numpy (float64) and applied with `einsum`, so they
reproduce torch's kernels exactly (bicubic A=-0.75, bilinear with and without antialias, `align_corners=False`),
independently of `jax.image.resize`'s conventions.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers.resize import resize_hw  # noqa: F401  (shared; imported from here by the SAM2 modules)

Dtype = jnp.dtype | type | None

#: nnx.Linear's default kernel init, given to the library layers (whose default is timm's trunc normal .02) so fresh
#: SAM2 weights keep the statistics this port always had; converted checkpoints replace them anyway.
default_kernel_init = nnx.initializers.lecun_normal()


class KeyStream:
    """Stands in for `nnx.Rngs` while building a large model: `params()` derives keys from one key in Python.

    Every `nnx.Rngs.params()` call updates a counter Variable whose `set_value` reads `.sharding`; on a tracer (under
    `nnx.eval_shape`, which `zoo.create_model(pretrained=...)` uses) that raises an AttributeError whose message walks
    the whole jaxpr, so building SAM2-L abstractly with a real Rngs is quadratic (minutes). One key from the caller's
    Rngs, then `fold_in` with a Python counter, keeps construction linear. Only `params()` is used by nnx layers.
    """

    def __init__(self, key: jax.Array):
        self._key = key
        self._count = 0

    def params(self) -> jax.Array:
        """A fresh key (the only stream the SAM2 modules draw from)."""
        self._count += 1
        return jax.random.fold_in(self._key, self._count)


def linear(in_dim: int, out_dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """nnx.Linear with the module's dtypes."""
    return nnx.Linear(in_dim, out_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def conv(
    in_dim: int,
    out_dim: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    dtype: Dtype,
    param_dtype: Dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """NHWC Conv2d with torch's explicit symmetric padding."""
    return nnx.Conv(
        in_dim,
        out_dim,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        feature_group_count=groups,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def conv_transpose_2x2(in_dim: int, out_dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    """torch ConvTranspose2d(kernel 2, stride 2): doubles H and W (the kernel flip is done by the converter)."""
    return nnx.ConvTranspose(
        in_dim, out_dim, (2, 2), strides=(2, 2), padding="VALID", dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


class MLP(nnx.Module):
    """SAM2's `MLP`: `num_layers` Linear layers with an activation between them (ReLU unless told otherwise).

    Kept for the three-layer heads (hypernetwork MLPs, IoU head with its sigmoid, object-score head, object-pointer
    projection), whose checkpoint names are `layers.<i>`; two-layer MLPs use `models.layers.Mlp`.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        *,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        sigmoid_output: bool = False,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nnx.List(
            [linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for a, b in itertools.pairwise(dims)]
        )
        self.activation = activation
        self.sigmoid_output = sigmoid_output

    def __call__(self, x: jax.Array) -> jax.Array:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = self.activation(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


# --------------------------------------------------------------------------------------------------------------------
# torch-exact resize matrices (numpy, float64, cached)
# --------------------------------------------------------------------------------------------------------------------


def _cubic_weights(t: float, a: float = -0.75) -> tuple[float, float, float, float]:
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of torch `F.interpolate(mode="bicubic", align_corners=False)` along one axis.

    torch's bicubic uses Keys' kernel with A=-0.75, an unclamped source index and clamped tap indices.
    """
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), np.float64)
    for out_index in range(out_size):
        source = scale * (out_index + 0.5) - 0.5
        base = math.floor(source)
        for tap, weight in enumerate(_cubic_weights(source - base)):
            matrix[out_index, min(max(base - 1 + tap, 0), in_size - 1)] += weight
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=64)
def bilinear_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
    """(out, in) matrix of torch bilinear resizing with `align_corners=False`.

    Without antialias this is `F.interpolate(mode="bilinear")`; with antialias (torch `antialias=True`, torchvision
    `Resize` on tensors) the triangle filter is widened by the downscale factor, as in PIL. Both agree on upsampling.
    """
    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), np.float64)
    if antialias and scale > 1.0:
        support = scale
        for out_index in range(out_size):
            center = scale * (out_index + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            taps = np.arange(lo, hi)
            weights = np.maximum(0.0, 1.0 - np.abs((taps - center + 0.5) / support))
            matrix[out_index, lo:hi] = weights / weights.sum()
    else:
        for out_index in range(out_size):
            source = max(scale * (out_index + 0.5) - 0.5, 0.0)
            lo = min(math.floor(source), in_size - 1)
            hi = min(lo + 1, in_size - 1)
            frac = source - lo
            matrix[out_index, lo] += 1.0 - frac
            matrix[out_index, hi] += frac
    matrix.setflags(write=False)
    return matrix
