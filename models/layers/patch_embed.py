"""Patch embedding: a strided conv (`proj`) that turns an NHWC image into tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def to_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """(v, v) for an int, else the two ints of `value`."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class PatchEmbed(nnx.Module):
    """Conv `proj` (kernel `patch_size`, stride `stride` = patch size, padding `padding`) -> tokens.

    `flatten=True` (ViT, CLIP): [batch, grid_h * grid_w, dim]; `flatten=False` (Hiera): NHWC [batch, gh, gw, dim].
    With `img_size` the grid is known in advance (`grid_size`, `num_patches`) and a size the patches do not tile is
    an error at construction.
    """

    def __init__(
        self, patch_size: int | tuple[int, int], in_chans: int, embed_dim: int, *,
        img_size: int | tuple[int, int] | None = None, stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0, use_bias: bool = True, flatten: bool = True,
        kernel_init: Callable[..., jax.Array] | None = None, dtype: Any = None, param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.patch_size = to_pair(patch_size)
        self.stride = to_pair(stride if stride is not None else patch_size)
        pad = to_pair(padding)
        self.flatten = flatten
        if img_size is not None:
            self.img_size = to_pair(img_size)
            if pad == (0, 0) and self.stride == self.patch_size and (
                self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]
            ):
                raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
            self.grid_size = tuple(
                (self.img_size[i] + 2 * pad[i] - self.patch_size[i]) // self.stride[i] + 1 for i in range(2)
            )
            self.num_patches = self.grid_size[0] * self.grid_size[1]
        extra = {} if kernel_init is None else {"kernel_init": kernel_init}
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=self.patch_size, strides=self.stride,
            padding=((pad[0], pad[0]), (pad[1], pad[1])), use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs, **extra,
        )

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        x = self.proj(x_bhwc)
        return x.reshape(x.shape[0], -1, x.shape[-1]) if self.flatten else x
