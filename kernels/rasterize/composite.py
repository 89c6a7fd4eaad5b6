"""Differentiable compositing of binned Gaussians for one camera: `jax.custom_vjp` around the XLA or Pallas kernels.

Gaussians come in packed as [N, 6 + V] rows (x, y, conic a, b, c, opacity, V blended values). The forward gathers
them into the chunk-aligned slot layout of `binning`, runs the per-tile kernel and untiles the result; the backward
runs the per-tile backward kernel, which writes one gradient row per intersection slot, and reduces the rows to
Gaussians either with a scatter-add ("scatter", deterministic on CPU) or with a sort-free segmented scan over the
Gaussian-major emission order ("sorted", deterministic everywhere).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from kernels.rasterize import composite_xla
from kernels.rasterize.binning import TileBins
from kernels.rasterize.config import CompositeConfig


def _untile(tiled: jax.Array, cfg: CompositeConfig) -> jax.Array:
    """[tiles, P, ...] -> [H, W, ...]."""
    ts = cfg.tile_size
    rest = tiled.shape[2:]
    image = tiled.reshape((cfg.tiles_y, cfg.tiles_x, ts, ts) + rest)
    image = jnp.moveaxis(image, 2, 1).reshape((cfg.tiles_y * ts, cfg.tiles_x * ts) + rest)
    return image[: cfg.height, : cfg.width]


def _tile(image: jax.Array, cfg: CompositeConfig) -> jax.Array:
    """[H, W, ...] -> [tiles, P, ...] (zero-padded to whole tiles)."""
    ts = cfg.tile_size
    rest = image.shape[2:]
    pad = [(0, cfg.tiles_y * ts - cfg.height), (0, cfg.tiles_x * ts - cfg.width)] + [(0, 0)] * len(rest)
    image = jnp.pad(image, pad)
    image = image.reshape((cfg.tiles_y, ts, cfg.tiles_x, ts) + rest)
    return jnp.moveaxis(image, 2, 1).reshape((cfg.num_tiles, ts * ts) + rest)


def _gather_slots(packed: jax.Array, bins: TileBins) -> jax.Array:
    padded = jnp.concatenate([packed, jnp.zeros((1, packed.shape[1]), packed.dtype)], axis=0)
    return padded[bins.padded_gaussian_ids]


def _run_forward(attrs_padded, bins: TileBins, cfg: CompositeConfig):
    if cfg.impl == "pallas":
        from kernels.rasterize import composite_pallas

        return composite_pallas.forward_pallas(attrs_padded, bins.chunk_starts, bins.tile_counts, cfg)
    return composite_xla.forward_xla(attrs_padded, bins.chunk_starts, bins.tile_counts, cfg)


def _run_backward(attrs_padded, bins: TileBins, background, acc, t_final, g_values, g_alpha, cfg):
    if cfg.impl == "pallas":
        from kernels.rasterize import composite_pallas

        return composite_pallas.backward_pallas(
            attrs_padded, bins.chunk_starts, bins.tile_counts, background, acc, t_final, g_values, g_alpha, cfg
        )
    return composite_xla.backward_xla(
        attrs_padded, bins.chunk_starts, bins.tile_counts, background, acc, t_final, g_values, g_alpha, cfg
    )


def segment_sum_sorted(rows: jax.Array, segment_ends: jax.Array) -> jax.Array:
    """Sums of contiguous row segments [start_i, end_i) with end_i = segment_ends[i] (non-decreasing), deterministic.

    A segmented inclusive scan (fixed reduction tree, no atomics) followed by a gather of each segment's last row.
    """
    num = rows.shape[0]
    starts = jnp.concatenate([jnp.zeros((1,), segment_ends.dtype), segment_ends[:-1]])
    flags = jnp.zeros((num + 1,), bool).at[jnp.minimum(starts, num)].set(True)[:num]

    def combine(left, right):
        left_rows, left_flag = left
        right_rows, right_flag = right
        return jnp.where(right_flag[..., None], right_rows, left_rows + right_rows), left_flag | right_flag

    scanned, _ = jax.lax.associative_scan(combine, (rows, flags))
    last = jnp.clip(segment_ends - 1, 0, num - 1)
    return jnp.where((segment_ends > starts)[:, None], scanned[last], 0.0)


def _reduce_slots(slot_grads, bins: TileBins, num_gaussians: int, cfg: CompositeConfig):
    valid = bins.padded_gaussian_ids < num_gaussians
    slot_grads = jnp.where(valid[:, None], slot_grads, 0.0)
    if cfg.reduction == "scatter":
        return jax.ops.segment_sum(slot_grads, bins.padded_gaussian_ids, num_segments=num_gaussians + 1)[:-1]
    # Back to emission order (Gaussian-major, each slot written once), then contiguous per-Gaussian segments.
    capacity = bins.sorted_emission_ids.shape[0]
    emission = jnp.where(valid, bins.sorted_emission_ids[jnp.minimum(bins.padded_sorted_slot, capacity - 1)], capacity)
    by_emission = jnp.zeros((capacity + 1, slot_grads.shape[1]), slot_grads.dtype).at[emission].set(slot_grads)
    ends = jnp.minimum(jnp.cumsum(bins.tiles_per_gaussian), capacity)
    return segment_sum_sorted(by_emission[:capacity], ends)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def composite(packed: jax.Array, background: jax.Array, bins: TileBins, cfg: CompositeConfig):
    """Blended values [H, W, V] (background added) and alpha [H, W] for packed Gaussians [N, 6 + V]."""
    out, _ = _composite_fwd(packed, background, bins, cfg)
    return out


def _composite_fwd(packed, background, bins, cfg):
    attrs_padded = _gather_slots(packed, bins)
    acc, t_final = _run_forward(attrs_padded, bins, cfg)
    values = acc + t_final[..., None] * background
    out = (_untile(values, cfg), _untile(1.0 - t_final, cfg))
    return out, (packed, background, bins, acc, t_final)


def _composite_bwd(cfg, residuals, cotangents):
    packed, background, bins, acc, t_final = residuals
    g_image, g_alpha = cotangents
    g_values = _tile(g_image, cfg)
    g_alpha_tiled = _tile(g_alpha, cfg)
    attrs_padded = _gather_slots(packed, bins)
    slot_grads = _run_backward(attrs_padded, bins, background, acc, t_final, g_values, g_alpha_tiled, cfg)
    g_packed = _reduce_slots(slot_grads, bins, packed.shape[0], cfg)
    g_background = jnp.einsum("tpv,tp->v", g_values, t_final)
    return g_packed.astype(packed.dtype), g_background.astype(background.dtype), None


composite.defvjp(_composite_fwd, _composite_bwd)
