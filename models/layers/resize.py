"""torch-exact resampling as dense interpolation matrices (numpy float64), applied with `einsum`.

torch's `F.interpolate(mode="bicubic", align_corners=False)` differs from `jax.image.resize("cubic")` (Keys a=-0.5
with edge handling of its own), so the kernels are re-implemented here:
- antialias=False (torch's default; open_clip / Hugging Face CLIP position embeddings, MaskAlign's 224 -> 196 teacher
  input): cubic convolution with A = -0.75, source index scale * (i + 0.5) - 0.5, taps clamped to the border;
- antialias=True (timm's `resample_abs_pos_embed`): PIL-style separable filter (cubic a = -0.5, support
  2 * max(scale, 1)), taps inside the image only, weights renormalised.
`resize_hw` applies any such pair of matrices to two axes of a jax array (at run time, e.g. inside a jitted forward).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _cubic_a075(t: np.ndarray) -> np.ndarray:
    a = -0.75
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _cubic_aa(t: np.ndarray) -> np.ndarray:
    a = -0.5
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, *, antialias: bool) -> np.ndarray:
    """[out_size, in_size] weights of torch's 1-D bicubic resampling (align_corners=False); read-only (cached)."""
    weights = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    if not antialias:
        for i in range(out_size):
            source = scale * (i + 0.5) - 0.5
            base = math.floor(source)
            frac = source - base
            for tap in range(-1, 3):
                index = min(max(base + tap, 0), in_size - 1)
                weights[i, index] += _cubic_a075(np.float64(tap - frac))
    else:
        support = 2.0 * scale if scale >= 1.0 else 2.0
        inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
        for i in range(out_size):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            taps = np.arange(lo, hi)
            w = _cubic_aa((taps - center + 0.5) * inv_scale)
            weights[i, lo:hi] = w / w.sum()
    weights.setflags(write=False)
    return weights


def resize_bicubic_torch(grid: np.ndarray, new_size: tuple[int, int], *, antialias: bool) -> np.ndarray:
    """Resize a numpy [height, width, channels] like torch `F.interpolate(mode="bicubic", align_corners=False)`
    (float64 result)."""
    rows = bicubic_matrix(grid.shape[0], new_size[0], antialias=antialias)
    cols = bicubic_matrix(grid.shape[1], new_size[1], antialias=antialias)
    out = np.einsum("ih,hwc->iwc", rows, grid.astype(np.float64))
    return np.einsum("jw,iwc->ijc", cols, out)


def resize_hw(x: jax.Array, size: tuple[int, int], matrix_fn: Callable[[int, int], np.ndarray], *,
              axes: tuple[int, int]) -> jax.Array:
    """Resize axes `axes` (height, width) of `x` to `size` with separable matrices from `matrix_fn(in, out)`.

    Computed in float32 at full matmul precision; the result has `x`'s dtype.
    """
    h_axis, w_axis = axes
    rows = jnp.asarray(matrix_fn(x.shape[h_axis], size[0]), jnp.float32)
    cols = jnp.asarray(matrix_fn(x.shape[w_axis], size[1]), jnp.float32)
    x32 = jnp.moveaxis(x.astype(jnp.float32), (h_axis, w_axis), (-2, -1))
    out = jnp.einsum("oh,...hw,pw->...op", rows, x32, cols, precision=jax.lax.Precision.HIGHEST)
    return jnp.moveaxis(out, (-2, -1), (h_axis, w_axis)).astype(x.dtype)
