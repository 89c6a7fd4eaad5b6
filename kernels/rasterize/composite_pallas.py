"""Pallas per-tile compositing kernels (forward and backward) for `jax.custom_vjp` in `composite.py`.

One program per 16x16 tile, one lane per pixel, a loop over the tile's depth-sorted Gaussians, as in graphdeco's
CUDA renderer. The forward stops when the tile's list ends or every pixel is done. The backward replays the same
front-to-back sequence (bit-identical stop decisions) and, with the forward's total accumulated value, gets each
Gaussian's "blended behind" term without dividing transmittance back out. It writes one gradient column per
intersection slot; tiles own disjoint slot ranges, so there are no atomics and the result is deterministic.

Layout: slot attributes are transposed to [6 + V, slots] so each Gaussian's fields are scalar loads. V is padded to
a power of two (Triton block shapes). GPU lowers through Triton (`grid` programs run in parallel; the gradient
output is aliased to a zero buffer so unwritten slots stay zero); TPU through Mosaic with the tile axis "arbitrary"
(the gradient output block is the whole slot array, revisited by every step). Tests run `interpret=True` on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels.rasterize.config import NUM_GEOMETRY, CompositeConfig


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _target(cfg: CompositeConfig) -> str | None:
    if cfg.interpret:
        return None
    return cfg.pallas_backend or {"gpu": "triton", "tpu": "mosaic_tpu"}.get(jax.default_backend())


def _scalar_store_spec(shape, cfg: CompositeConfig) -> pl.BlockSpec:
    """Whole-array block for the per-slot gradients, which are written one scalar at a time.

    Mosaic TPU cannot store scalars to VMEM, so there the array lives in SMEM (small: about 1 MiB per core, which
    bounds the slot count of a TPU call; a chunk-vectorised TPU backward is future work).
    """
    if _target(cfg) == "mosaic_tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pl.BlockSpec(memory_space=pltpu.SMEM)
    return pl.BlockSpec(shape, lambda t: (0,) * len(shape))


def _compiler_params(cfg: CompositeConfig):
    backend = _target(cfg)
    if backend == "triton":
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams(num_warps=4, num_stages=1)
    if backend == "mosaic_tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("arbitrary",))
    return None


def _pixel_centres(tile, cfg: CompositeConfig, dtype):
    local = jax.lax.iota(jnp.int32, cfg.pixels_per_tile)
    px = (tile % cfg.tiles_x) * cfg.tile_size + local % cfg.tile_size
    py = (tile // cfg.tiles_x) * cfg.tile_size + local // cfg.tile_size
    return px.astype(dtype) + 0.5, py.astype(dtype) + 0.5


def _gaussian_alpha(attrs_ref, slot, px, py, cfg: CompositeConfig):
    x, y = attrs_ref[0, slot], attrs_ref[1, slot]
    ca, cb, cc, opacity = attrs_ref[2, slot], attrs_ref[3, slot], attrs_ref[4, slot], attrs_ref[5, slot]
    dx, dy = x - px, y - py
    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
    alpha_raw = opacity * jnp.exp(power)
    alpha = jnp.minimum(cfg.alpha_max, alpha_raw)
    return dx, dy, (ca, cb, cc), power, alpha_raw, alpha


def _step(transmittance, done, power, alpha, cfg: CompositeConfig):
    """Which pixels this Gaussian reaches (`use`), the next T and the done flags (float 0/1)."""
    valid = (power <= 0.0) & (alpha >= cfg.alpha_min) & (done == 0.0)
    next_t = transmittance * (1.0 - alpha)
    stop = (next_t <= cfg.transmittance_min) if cfg.stop_inclusive else (next_t < cfg.transmittance_min)
    use = valid & ~stop
    done = jnp.where(valid & stop, 1.0, done)
    return use, jnp.where(use, next_t, transmittance), done


def _forward_kernel(starts_ref, counts_ref, attrs_ref, acc_ref, t_ref, *, cfg: CompositeConfig, num_values: int):
    tile = pl.program_id(0)
    start, count = starts_ref[tile], counts_ref[tile]
    dtype = t_ref.dtype
    px, py = _pixel_centres(tile, cfg, dtype)
    pixels = cfg.pixels_per_tile

    def cond(state):
        j, _, done, _ = state
        return (j < count) & (jnp.min(done) == 0.0)

    def body(state):
        j, transmittance, done, acc = state
        slot = start + j
        _, _, _, power, _, alpha = _gaussian_alpha(attrs_ref, slot, px, py, cfg)
        use, new_t, done = _step(transmittance, done, power, alpha, cfg)
        weight = jnp.where(use, alpha * transmittance, 0.0)
        acc = tuple(a + weight * attrs_ref[NUM_GEOMETRY + v, slot] for v, a in enumerate(acc))
        return j + 1, new_t, done, acc

    init = (
        jnp.int32(0),
        jnp.ones((pixels,), dtype),
        jnp.zeros((pixels,), dtype),
        tuple(jnp.zeros((pixels,), dtype) for _ in range(num_values)),
    )
    _, transmittance, _, acc = jax.lax.while_loop(cond, body, init)
    for v in range(num_values):
        acc_ref[0, v, :] = acc[v]
    t_ref[0, 0, :] = transmittance


def _backward_kernel(
    starts_ref, counts_ref, attrs_ref, bg_ref, acc_ref, t_final_ref, g_values_ref, g_alpha_ref, _zeros_ref,
    grads_ref, *, cfg: CompositeConfig, num_values: int,
):  # fmt: skip
    tile = pl.program_id(0)
    start, count = starts_ref[tile], counts_ref[tile]
    dtype = t_final_ref.dtype
    px, py = _pixel_centres(tile, cfg, dtype)
    pixels = cfg.pixels_per_tile
    g = [g_values_ref[0, v, :] for v in range(num_values)]
    g_total = sum(g[v] * acc_ref[0, v, :] for v in range(num_values))
    t_final = t_final_ref[0, 0, :]
    g_transmittance = sum(g[v] * bg_ref[v] for v in range(num_values)) - g_alpha_ref[0, 0, :]
    tail = g_transmittance * t_final

    def cond(state):
        j, _, done, _ = state
        return (j < count) & (jnp.min(done) == 0.0)

    def body(state):
        j, transmittance, done, running = state
        slot = start + j
        dx, dy, (ca, cb, cc), power, alpha_raw, alpha = _gaussian_alpha(attrs_ref, slot, px, py, cfg)
        use, new_t, done = _step(transmittance, done, power, alpha, cfg)
        weight = jnp.where(use, alpha * transmittance, 0.0)
        values = [attrs_ref[NUM_GEOMETRY + v, slot] for v in range(num_values)]
        g_dot_value = sum(g[v] * values[v] for v in range(num_values))
        running = running + weight * g_dot_value
        behind = g_total - running
        one_minus = jnp.where(use, 1.0 - alpha, 1.0)
        g_alpha_used = g_dot_value * transmittance - (behind + tail) / one_minus
        g_alpha_raw = jnp.where(use & (alpha_raw <= cfg.alpha_max), g_alpha_used, 0.0)
        g_power = g_alpha_raw * alpha_raw
        opacity = attrs_ref[5, slot]
        safe_opacity = jnp.where(opacity > 0, opacity, 1.0)
        grads_ref[0, slot] = jnp.sum(g_power * (-ca * dx - cb * dy))
        grads_ref[1, slot] = jnp.sum(g_power * (-cc * dy - cb * dx))
        grads_ref[2, slot] = jnp.sum(g_power * (-0.5 * dx * dx))
        grads_ref[3, slot] = jnp.sum(g_power * (-dx * dy))
        grads_ref[4, slot] = jnp.sum(g_power * (-0.5 * dy * dy))
        grads_ref[5, slot] = jnp.sum(g_alpha_raw * alpha_raw) / safe_opacity
        for v in range(num_values):
            grads_ref[NUM_GEOMETRY + v, slot] = jnp.sum(weight * g[v])
        return j + 1, new_t, done, running

    init = (jnp.int32(0), jnp.ones((pixels,), dtype), jnp.zeros((pixels,), dtype), jnp.zeros((pixels,), dtype))
    jax.lax.while_loop(cond, body, init)


def _pad_values(attrs_padded: jax.Array) -> tuple[jax.Array, int]:
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    padded_values = _pow2(num_values)
    pad = padded_values - num_values
    attrs_t = jnp.pad(attrs_padded, ((0, 0), (0, pad))).T
    return attrs_t, padded_values


def forward_pallas(attrs_padded, chunk_starts, tile_counts, cfg: CompositeConfig):
    """Accumulated values [tiles, P, V] and final transmittance [tiles, P] (same contract as `forward_xla`)."""
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    attrs_t, padded_values = _pad_values(attrs_padded)
    dtype, tiles, pixels = attrs_padded.dtype, cfg.num_tiles, cfg.pixels_per_tile
    full = lambda shape: pl.BlockSpec(shape, lambda t: (0,) * len(shape))
    acc, transmittance = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, num_values=padded_values),
        grid=(tiles,),
        in_specs=[full(chunk_starts.shape), full(tile_counts.shape), full(attrs_t.shape)],
        out_specs=[
            pl.BlockSpec((1, padded_values, pixels), lambda t: (t, 0, 0)),
            pl.BlockSpec((1, 1, pixels), lambda t: (t, 0, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((tiles, padded_values, pixels), dtype),
            jax.ShapeDtypeStruct((tiles, 1, pixels), dtype),
        ],
        interpret=cfg.interpret,
        compiler_params=_compiler_params(cfg),
        name="gaussian_composite_fwd",
    )(chunk_starts, tile_counts, attrs_t)
    return jnp.swapaxes(acc, 1, 2)[..., :num_values], transmittance[:, 0]


def backward_pallas(attrs_padded, chunk_starts, tile_counts, background, acc, t_final, g_values, g_alpha, cfg):
    """Per-slot gradients [padded_capacity, 6 + V] (same contract as `backward_xla`)."""
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    attrs_t, padded_values = _pad_values(attrs_padded)
    pad = padded_values - num_values
    dtype, tiles, pixels = attrs_padded.dtype, cfg.num_tiles, cfg.pixels_per_tile
    as_tiles = lambda a: jnp.swapaxes(jnp.pad(a, ((0, 0), (0, 0), (0, pad))), 1, 2)
    bg = jnp.pad(background, (0, pad))
    zeros = jnp.zeros(attrs_t.shape, dtype)
    full = lambda shape: pl.BlockSpec(shape, lambda t: (0,) * len(shape))
    per_tile_values = pl.BlockSpec((1, padded_values, pixels), lambda t: (t, 0, 0))
    per_tile = pl.BlockSpec((1, 1, pixels), lambda t: (t, 0, 0))
    grads_t = pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg, num_values=padded_values),
        grid=(tiles,),
        in_specs=[
            full(chunk_starts.shape),
            full(tile_counts.shape),
            full(attrs_t.shape),
            full(bg.shape),
            per_tile_values,
            per_tile,
            per_tile_values,
            per_tile,
            _scalar_store_spec(zeros.shape, cfg),
        ],
        out_specs=_scalar_store_spec(attrs_t.shape, cfg),
        out_shape=jax.ShapeDtypeStruct(attrs_t.shape, dtype),
        input_output_aliases={8: 0},
        interpret=cfg.interpret,
        compiler_params=_compiler_params(cfg),
        name="gaussian_composite_bwd",
    )(
        chunk_starts,
        tile_counts,
        attrs_t,
        bg,
        as_tiles(acc),
        t_final[:, None],
        as_tiles(g_values),
        g_alpha[:, None],
        zeros,
    )
    return grads_t.T[:, : NUM_GEOMETRY + num_values]
