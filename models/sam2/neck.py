"""FPN neck of the SAM2 image encoder (`image_encoder.FpnNeck`) and the sine position encoding.

1x1 lateral convolutions to `d_model`; a nearest-neighbour top-down path only into `top_down_levels`; a sine
position encoding per level. `convs[0]` is the lateral of the lowest-resolution stage, as in the checkpoint.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.sam2.layers import Dtype, conv


@functools.lru_cache(maxsize=32)
def sine_position_encoding(height: int, width: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """`PositionEmbeddingSine(dim, normalize=True)` for an (H, W) map, as an (H, W, dim) float32 array (y then x).

    Computed in float32 numpy, following torch's order of operations.
    """
    half = dim // 2
    scale = np.float32(2 * math.pi)
    eps = np.float32(1e-6)
    y = np.arange(1, height + 1, dtype=np.float32)
    x = np.arange(1, width + 1, dtype=np.float32)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = np.float32(temperature) ** (2 * (dim_t // 2) / np.float32(half))

    def encode(values):
        pos = values[:, None] / dim_t
        return np.stack((np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])), axis=2).reshape(len(values), half)

    pos_y = np.broadcast_to(encode(y)[:, None, :], (height, width, half))
    pos_x = np.broadcast_to(encode(x)[None, :, :], (height, width, half))
    out = np.concatenate([pos_y, pos_x], axis=-1).astype(np.float32)
    out.setflags(write=False)
    return out


class LateralConv(nnx.Module):
    """Holds the lateral 1x1 conv under the checkpoint's name `convs.<i>.conv`."""

    def __init__(self, in_dim: int, out_dim: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        self.conv = conv(in_dim, out_dim, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class FpnNeck(nnx.Module):
    """Feature pyramid without output convs; returns (features, position encodings), highest resolution first."""

    def __init__(self, backbone_channels: list[int], d_model: int = 256, top_down_levels: tuple[int, ...] = (2, 3),
                 *, dtype: Dtype = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        # `backbone_channels` is highest resolution first; the checkpoint's convs are lowest resolution first.
        self.convs = nnx.List(
            [LateralConv(c, d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for c in backbone_channels[::-1]]
        )
        self.d_model = d_model
        self.top_down_levels = tuple(top_down_levels)

    def __call__(self, xs: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        last = len(self.convs) - 1
        features: list[jax.Array | None] = [None] * len(xs)
        positions: list[jax.Array | None] = [None] * len(xs)
        previous = None
        for level in range(last, -1, -1):
            lateral = self.convs[last - level](xs[level])
            if level in self.top_down_levels and previous is not None:
                # torch upsamples in float32 (nearest x2), then adds in the lateral's dtype.
                up = jnp.repeat(jnp.repeat(previous.astype(jnp.float32), 2, axis=1), 2, axis=2)
                previous = lateral + up.astype(lateral.dtype)
            else:
                previous = lateral
            features[level] = previous
            batch, height, width, _ = previous.shape
            pos = jnp.asarray(sine_position_encoding(height, width, self.d_model), previous.dtype)
            positions[level] = jnp.broadcast_to(pos[None], (batch, height, width, self.d_model))
        return features, positions
