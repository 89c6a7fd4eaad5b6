"""Pallas per-tile compositing kernels (forward and backward) for `jax.custom_vjp` in `composite.py`.

One program per 16x16 tile, one lane per pixel, a loop over the tile's depth-sorted Gaussians, as in graphdeco's
CUDA renderer. The forward stops when the tile's list ends or every pixel is done. The backward replays the same
front-to-back sequence (bit-identical stop decisions) and, with the forward's total accumulated value, gets each
Gaussian's "blended behind" term without dividing transmittance back out. It writes one gradient column per
intersection slot; tiles own disjoint slot ranges, so there are no atomics and the result is deterministic.

Two layouts of the same per-Gaussian math (`_blend`, `_blend_backward`):

- Triton (GPU) and plain `interpret=True`: slot attributes transposed to [6 + V, slots], whole-array blocks, so each
  Gaussian's fields are scalar loads at `[k, slot]`. V is padded to a power of two (Triton block shapes). `grid`
  programs run in parallel; the gradient output is aliased to a zero buffer so unwritten slots stay zero.
- Mosaic (TPU): Mosaic cannot load or store one element of a VMEM vector at a dynamic lane offset (E2003, unproven
  alignment), so slots are grouped into chunks [slots / chunk, 6 + V, chunk] that stay in HBM. The per-tile chunk
  starts and counts are scalar-prefetched into SMEM; each program copies its tile's chunks one at a time (double
  buffered) into an SMEM scratch, where per-Gaussian fields are scalar loads, and the backward writes per-slot
  gradients with scalar stores into an SMEM chunk buffer that is copied back to the chunk in HBM (aliased to zeros).
  Pixels are a [P / 128, 128] vector per tile. SMEM use is fixed (one [2, 6 + V, chunk] double buffer in the forward,
  two in the backward: 16 KiB each at RGB after (8, 128) padding) plus 8 bytes per tile for the prefetched starts /
  counts, so the intersection capacity is bounded by HBM, not SMEM (v5e: 20M slots compile, 2^25 exceed HBM); the
  SMEM bound is the tile count (v5e, 1 MiB: 123,904 tiles = 5632x5632 compile, 262,144 do not). Checked with AOT
  compilation (`kernels.tpu_compile`: v4, v5e, v5p, v6e); on CPU the tests interpret this layout too
  (`pallas_backend="mosaic_tpu"` with `interpret=True`, and under Pallas' TPU interpret mode).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels.rasterize.config import NUM_GEOMETRY, CompositeConfig


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _target(cfg: CompositeConfig) -> str | None:
    if cfg.interpret:
        return None
    return cfg.pallas_backend or {"gpu": "triton", "tpu": "mosaic_tpu"}.get(jax.default_backend())


def _scalar_store_spec(shape) -> pl.BlockSpec:
    """Whole-array block for the per-slot gradients, which are written one scalar at a time (Triton / interpret;
    the Mosaic layout writes them through SMEM chunk buffers instead)."""
    return pl.BlockSpec(shape, lambda t: (0,) * len(shape))


def _compiler_params(cfg: CompositeConfig):
    if _target(cfg) == "triton":
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams(num_warps=4, num_stages=1)
    return None


def _pixel_centres(tile, cfg: CompositeConfig, dtype):
    local = jax.lax.iota(jnp.int32, cfg.pixels_per_tile)
    px = (tile % cfg.tiles_x) * cfg.tile_size + local % cfg.tile_size
    py = (tile // cfg.tiles_x) * cfg.tile_size + local // cfg.tile_size
    return px.astype(dtype) + 0.5, py.astype(dtype) + 0.5


def _gaussian_alpha(field, px, py, cfg: CompositeConfig):
    """`field(k)`: the k-th packed attribute of the Gaussian (a scalar)."""
    x, y = field(0), field(1)
    ca, cb, cc, opacity = field(2), field(3), field(4), field(5)
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


def _blend(field, transmittance, done, acc, px, py, cfg: CompositeConfig):
    """One Gaussian of the forward: (T, done, accumulated values) after it."""
    _, _, _, power, _, alpha = _gaussian_alpha(field, px, py, cfg)
    use, new_t, done = _step(transmittance, done, power, alpha, cfg)
    weight = jnp.where(use, alpha * transmittance, 0.0)
    acc = tuple(a + weight * field(NUM_GEOMETRY + v) for v, a in enumerate(acc))
    return new_t, done, acc


def _blend_backward(field, transmittance, done, running, px, py, g, g_total, tail, cfg: CompositeConfig):
    """One Gaussian of the backward replay: (T, done, running) after it and its 6 + V gradient scalars."""
    num_values = len(g)
    dx, dy, (ca, cb, cc), power, alpha_raw, alpha = _gaussian_alpha(field, px, py, cfg)
    use, new_t, done = _step(transmittance, done, power, alpha, cfg)
    weight = jnp.where(use, alpha * transmittance, 0.0)
    values = [field(NUM_GEOMETRY + v) for v in range(num_values)]
    g_dot_value = sum(g[v] * values[v] for v in range(num_values))
    running = running + weight * g_dot_value
    behind = g_total - running
    one_minus = jnp.where(use, 1.0 - alpha, 1.0)
    g_alpha_used = g_dot_value * transmittance - (behind + tail) / one_minus
    g_alpha_raw = jnp.where(use & (alpha_raw <= cfg.alpha_max), g_alpha_used, 0.0)
    g_power = g_alpha_raw * alpha_raw
    opacity = field(5)
    safe_opacity = jnp.where(opacity > 0, opacity, 1.0)
    grads = [
        jnp.sum(g_power * (-ca * dx - cb * dy)),
        jnp.sum(g_power * (-cc * dy - cb * dx)),
        jnp.sum(g_power * (-0.5 * dx * dx)),
        jnp.sum(g_power * (-dx * dy)),
        jnp.sum(g_power * (-0.5 * dy * dy)),
        jnp.sum(g_alpha_raw * alpha_raw) / safe_opacity,
    ] + [jnp.sum(weight * g[v]) for v in range(num_values)]
    return new_t, done, running, grads


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
        new_t, done, acc = _blend(lambda k: attrs_ref[k, slot], transmittance, done, acc, px, py, cfg)
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
        field = lambda k: attrs_ref[k, slot]
        new_t, done, running, grads = _blend_backward(
            field, transmittance, done, running, px, py, g, g_total, tail, cfg
        )
        for k, value in enumerate(grads):
            grads_ref[k, slot] = value
        return j + 1, new_t, done, running

    init = (jnp.int32(0), jnp.ones((pixels,), dtype), jnp.zeros((pixels,), dtype), jnp.zeros((pixels,), dtype))
    jax.lax.while_loop(cond, body, init)


# ------------------------------------------------------------------------------------------------ Mosaic (TPU)


def _mosaic(cfg: CompositeConfig) -> bool:
    """Mosaic layout: compiled for TPU, or interpreted with `pallas_backend="mosaic_tpu"` (how CPU tests run it)."""
    return _target(cfg) == "mosaic_tpu" or (cfg.interpret and cfg.pallas_backend == "mosaic_tpu")


def _pixel_grid(cfg: CompositeConfig) -> tuple[int, int]:
    """(rows, lanes) of a tile's pixels as a 2-D vector: 128 lanes when the tile has a multiple of 128 pixels."""
    pixels = cfg.pixels_per_tile
    return (pixels // 128, 128) if pixels % 128 == 0 else (1, pixels)


def _pixel_centres_2d(tile, cfg: CompositeConfig, dtype):
    rows, lanes = _pixel_grid(cfg)
    local = jax.lax.broadcasted_iota(jnp.int32, (rows, lanes), 0) * lanes
    local = local + jax.lax.broadcasted_iota(jnp.int32, (rows, lanes), 1)
    px = (tile % cfg.tiles_x) * cfg.tile_size + local % cfg.tile_size
    py = (tile // cfg.tiles_x) * cfg.tile_size + local // cfg.tile_size
    return px.astype(dtype) + 0.5, py.astype(dtype) + 0.5


def _mosaic_chunk_loop(starts_ref, counts_ref, attrs_hbm, buf, sem, init, gaussian, cfg: CompositeConfig,
                       before_chunk=None, after_chunk=None):  # fmt: skip
    """Front-to-back loop over one tile's Gaussians, one chunk of slots at a time.

    Each chunk [6 + V, chunk] is copied from HBM into an SMEM double buffer (the next chunk's copy runs while this
    one is blended), so every per-Gaussian field is a scalar load at a dynamic SMEM index. `gaussian(field, b, j,
    state) -> state` blends slot j of buffer b; state[0] is the done mask. Stops like the other kernels: at the end of
    the tile's list or when every pixel is done. `before_chunk(c, b)` / `after_chunk(c, b, j_end)` run around chunk c
    (j_end: how many of its slots were blended). Returns the number of chunks visited and the final state.
    """
    chunk = cfg.chunk
    tile = pl.program_id(0)
    first = starts_ref[tile] // chunk  # tile lists start at multiples of the chunk (binning)
    count = counts_ref[tile]
    n_chunks = (count + chunk - 1) // chunk
    copy = lambda c, b: pltpu.make_async_copy(attrs_hbm.at[first + c], buf.at[b], sem.at[b])

    @pl.when(n_chunks > 0)
    def _():
        copy(0, 0).start()

    def live(state):
        return jnp.min(state[0]) == 0.0

    def outer_cond(carry):
        c, state = carry
        return (c < n_chunks) & live(state)

    def outer_body(carry):
        c, state = carry
        b = c % 2
        copy(c, b).wait()

        @pl.when(c + 1 < n_chunks)
        def _():
            copy(c + 1, 1 - b).start()

        n_here = jnp.minimum(chunk, count - c * chunk)
        if before_chunk is not None:
            before_chunk(c, b)

        def inner_cond(inner):
            j, state = inner
            return (j < n_here) & live(state)

        def inner_body(inner):
            j, state = inner
            return j + 1, gaussian(lambda k: buf[b, k, j], b, j, state)

        j_end, state = jax.lax.while_loop(inner_cond, inner_body, (jnp.int32(0), state))
        if after_chunk is not None:
            after_chunk(c, b, j_end)
        return c + 1, state

    c_end, state = jax.lax.while_loop(outer_cond, outer_body, (jnp.int32(0), init))

    @pl.when(c_end < n_chunks)  # stopped early with the next chunk's copy in flight
    def _():
        copy(c_end, c_end % 2).wait()

    return c_end, state


def _forward_kernel_mosaic(starts_ref, counts_ref, attrs_hbm, acc_ref, t_ref, buf, sem, *, cfg, num_values):
    dtype = t_ref.dtype
    px, py = _pixel_centres_2d(pl.program_id(0), cfg, dtype)
    shape = px.shape

    def gaussian(field, b, j, state):
        done, transmittance, acc = state
        new_t, done, acc = _blend(field, transmittance, done, acc, px, py, cfg)
        return done, new_t, acc

    init = (jnp.zeros(shape, dtype), jnp.ones(shape, dtype), tuple(jnp.zeros(shape, dtype) for _ in range(num_values)))
    _, (_, transmittance, acc) = _mosaic_chunk_loop(starts_ref, counts_ref, attrs_hbm, buf, sem, init, gaussian, cfg)
    for v in range(num_values):
        acc_ref[0, v] = acc[v]
    t_ref[0] = transmittance


def _backward_kernel_mosaic(
    starts_ref, counts_ref, attrs_hbm, bg_ref, acc_ref, t_final_ref, g_values_ref, g_alpha_ref, _zeros_hbm,
    grads_hbm, buf, sem, gbuf, gsem, *, cfg: CompositeConfig, num_values: int,
):  # fmt: skip
    """Per-slot gradients go to an SMEM chunk buffer (scalar stores) and are copied to their chunk in HBM; chunks
    this tile never reaches keep the aliased zeros."""
    chunk, fields = cfg.chunk, NUM_GEOMETRY + num_values
    tile = pl.program_id(0)
    first = starts_ref[tile] // chunk
    dtype = t_final_ref.dtype
    px, py = _pixel_centres_2d(tile, cfg, dtype)
    g = [g_values_ref[0, v] for v in range(num_values)]
    g_total = sum(g[v] * acc_ref[0, v] for v in range(num_values))
    t_final = t_final_ref[0]
    g_transmittance = sum(g[v] * bg_ref[v] for v in range(num_values)) - g_alpha_ref[0]
    tail = g_transmittance * t_final
    write = lambda c, b: pltpu.make_async_copy(gbuf.at[b], grads_hbm.at[first + c], gsem.at[b])

    def gaussian(field, b, j, state):
        done, transmittance, running = state
        new_t, done, running, grads = _blend_backward(
            field, transmittance, done, running, px, py, g, g_total, tail, cfg
        )
        for k, value in enumerate(grads):
            gbuf[b, k, j] = value
        return done, new_t, running

    def after_chunk(c, b, j_end):
        @pl.loop(j_end, chunk)  # slots after the stop get zero gradients
        def _(j):
            for k in range(fields):
                gbuf[b, k, j] = jnp.zeros((), dtype)

        write(c, b).start()

    def before_chunk(c, b):
        @pl.when(c >= 2)  # this buffer held chunk c - 2: its copy to HBM must be done
        def _():
            write(c - 2, b).wait()

    shape = px.shape
    init = (jnp.zeros(shape, dtype), jnp.ones(shape, dtype), jnp.zeros(shape, dtype))
    c_end, _ = _mosaic_chunk_loop(
        starts_ref, counts_ref, attrs_hbm, buf, sem, init, gaussian, cfg, before_chunk, after_chunk
    )

    def drain(c):
        @pl.when(c >= 0)
        def _():
            write(c, c % 2).wait()

    drain(c_end - 2)  # the copies of the last two chunks to HBM may still be in flight
    drain(c_end - 1)


def _mosaic_interpret(cfg: CompositeConfig):
    return bool(cfg.interpret)  # the tests swap in pltpu.InterpretParams() to check the DMA protocol


def _slot_chunks(attrs_padded: jax.Array, chunk: int) -> jax.Array:
    """[padded_capacity, F] -> [padded_capacity / chunk, F, chunk]: one leading index per chunk (DMA-able)."""
    slots, fields = attrs_padded.shape
    return jnp.swapaxes(attrs_padded.reshape(slots // chunk, chunk, fields), 1, 2)


def _mosaic_scratch(cfg: CompositeConfig, fields: int, dtype):
    return [pltpu.SMEM((2, fields, cfg.chunk), dtype), pltpu.SemaphoreType.DMA((2,))]


def _forward_mosaic(attrs_padded, chunk_starts, tile_counts, cfg: CompositeConfig):
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    dtype, tiles = attrs_padded.dtype, cfg.num_tiles
    rows, lanes = _pixel_grid(cfg)
    attrs_c = _slot_chunks(attrs_padded, cfg.chunk)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2,
        grid=(tiles,),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)],
        out_specs=[
            pl.BlockSpec((1, num_values, rows, lanes), lambda t, *_: (t, 0, 0, 0)),
            pl.BlockSpec((1, rows, lanes), lambda t, *_: (t, 0, 0)),
        ],
        scratch_shapes=_mosaic_scratch(cfg, attrs_c.shape[1], dtype),
    )
    acc, transmittance = pl.pallas_call(
        functools.partial(_forward_kernel_mosaic, cfg=cfg, num_values=num_values),
        grid_spec=grid_spec,
        out_shape=[
            jax.ShapeDtypeStruct((tiles, num_values, rows, lanes), dtype),
            jax.ShapeDtypeStruct((tiles, rows, lanes), dtype),
        ],
        interpret=_mosaic_interpret(cfg),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        name="gaussian_composite_fwd",
    )(chunk_starts, tile_counts, attrs_c)
    acc = jnp.swapaxes(acc.reshape(tiles, num_values, rows * lanes), 1, 2)
    return acc, transmittance.reshape(tiles, rows * lanes)


def _backward_mosaic(attrs_padded, chunk_starts, tile_counts, background, acc, t_final, g_values, g_alpha, cfg):
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    dtype, tiles = attrs_padded.dtype, cfg.num_tiles
    rows, lanes = _pixel_grid(cfg)
    attrs_c = _slot_chunks(attrs_padded, cfg.chunk)
    fields = attrs_c.shape[1]
    per_tile_values = lambda a: jnp.swapaxes(a, 1, 2).reshape(tiles, num_values, rows, lanes)
    values_spec = pl.BlockSpec((1, num_values, rows, lanes), lambda t, *_: (t, 0, 0, 0))
    pixel_spec = pl.BlockSpec((1, rows, lanes), lambda t, *_: (t, 0, 0))
    hbm = pl.BlockSpec(memory_space=pl.ANY)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2,
        grid=(tiles,),
        in_specs=[hbm, pl.BlockSpec(memory_space=pltpu.SMEM), values_spec, pixel_spec, values_spec, pixel_spec, hbm],
        out_specs=hbm,
        scratch_shapes=_mosaic_scratch(cfg, fields, dtype) + _mosaic_scratch(cfg, fields, dtype),
    )
    grads_c = pl.pallas_call(
        functools.partial(_backward_kernel_mosaic, cfg=cfg, num_values=num_values),
        grid_spec=grid_spec,
        out_shape=jax.ShapeDtypeStruct(attrs_c.shape, dtype),
        input_output_aliases={8: 0},  # operand 8 counts the two scalar-prefetch operands
        interpret=_mosaic_interpret(cfg),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        name="gaussian_composite_bwd",
    )(
        chunk_starts,
        tile_counts,
        attrs_c,
        background,
        per_tile_values(acc),
        t_final.reshape(tiles, rows, lanes),
        per_tile_values(g_values),
        g_alpha.reshape(tiles, rows, lanes),
        jnp.zeros(attrs_c.shape, dtype),
    )
    return jnp.swapaxes(grads_c, 1, 2).reshape(attrs_padded.shape)


def _pad_values(attrs_padded: jax.Array) -> tuple[jax.Array, int]:
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    padded_values = _pow2(num_values)
    pad = padded_values - num_values
    attrs_t = jnp.pad(attrs_padded, ((0, 0), (0, pad))).T
    return attrs_t, padded_values


def forward_pallas(attrs_padded, chunk_starts, tile_counts, cfg: CompositeConfig):
    """Accumulated values [tiles, P, V] and final transmittance [tiles, P] (same contract as `forward_xla`)."""
    if _mosaic(cfg):
        return _forward_mosaic(attrs_padded, chunk_starts, tile_counts, cfg)
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
    if _mosaic(cfg):
        return _backward_mosaic(
            attrs_padded, chunk_starts, tile_counts, background, acc, t_final, g_values, g_alpha, cfg
        )
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
            _scalar_store_spec(zeros.shape),
        ],
        out_specs=_scalar_store_spec(attrs_t.shape),
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
