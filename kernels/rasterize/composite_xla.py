"""Tiled front-to-back compositing in pure jnp (the CPU path), forward and explicit backward.

One tile at a time (`lax.map` / `fori_loop` over tiles), one chunk of depth-sorted Gaussians at a time (`while_loop`
that stops when the tile's list ends or every pixel has saturated). Inside a chunk the sequential transmittance is a
cumulative product, so the per-Gaussian loop of the CUDA kernel becomes [pixels, chunk] array math. Memory is
bounded: the forward keeps only per-pixel (accumulated values, T); the backward recomputes each chunk from the
front, using the total accumulated value to get the "colour behind" term, and writes one gradient row per
intersection slot (tiles own disjoint, chunk-aligned slot ranges, so no atomics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.rasterize.config import NUM_GEOMETRY, CompositeConfig


def tile_pixel_centres(tile: jax.Array, cfg: CompositeConfig, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinates [P] of a tile, row-major within the tile."""
    local = jnp.arange(cfg.pixels_per_tile, dtype=jnp.int32)
    px = (tile % cfg.tiles_x) * cfg.tile_size + local % cfg.tile_size
    py = (tile // cfg.tiles_x) * cfg.tile_size + local // cfg.tile_size
    return px.astype(dtype) + 0.5, py.astype(dtype) + 0.5


def _passes(t_after: jax.Array, cfg: CompositeConfig) -> jax.Array:
    if cfg.stop_inclusive:
        return t_after > cfg.transmittance_min
    return t_after >= cfg.transmittance_min


def _chunk_terms(attrs: jax.Array, px, py, transmittance, done, cfg: CompositeConfig):
    """Blending weights of one chunk [G, 6 + V] for all pixels of a tile."""
    x, y, ca, cb, cc, opacity = (attrs[:, k] for k in range(NUM_GEOMETRY))
    dx = x[None, :] - px[:, None]
    dy = y[None, :] - py[:, None]
    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
    alpha_raw = opacity * jnp.exp(power)
    alpha = jnp.minimum(cfg.alpha_max, alpha_raw)
    valid = (power <= 0.0) & (alpha >= cfg.alpha_min) & ~done[:, None]
    alpha_valid = jnp.where(valid, alpha, 0.0)
    t_after = transmittance[:, None] * jnp.cumprod(1.0 - alpha_valid, axis=1)
    passes = _passes(t_after, cfg)
    contribute = valid & passes
    alpha_used = jnp.where(contribute, alpha, 0.0)
    keep = jnp.cumprod(1.0 - alpha_used, axis=1)
    t_before = transmittance[:, None] * jnp.concatenate([jnp.ones_like(keep[:, :1]), keep[:, :-1]], axis=1)
    weights = alpha_used * t_before
    new_t = transmittance * keep[:, -1]
    new_done = done | jnp.any(valid & ~passes, axis=1)
    return {
        "dx": dx,
        "dy": dy,
        "alpha_raw": alpha_raw,
        "alpha_used": alpha_used,
        "contribute": contribute,
        "t_before": t_before,
        "weights": weights,
        "new_t": new_t,
        "new_done": new_done,
    }


def forward_xla(attrs_padded, chunk_starts, tile_counts, cfg: CompositeConfig):
    """Accumulated values [tiles, P, V] (no background) and final transmittance [tiles, P]."""
    num_values = attrs_padded.shape[1] - NUM_GEOMETRY
    dtype = attrs_padded.dtype
    chunk = cfg.chunk
    pixels = cfg.pixels_per_tile

    def one_tile(tile):
        px, py = tile_pixel_centres(tile, cfg, attrs_padded.dtype)
        start, count = chunk_starts[tile], tile_counts[tile]
        n_chunks = -(-count // chunk)

        def cond(state):
            c, _, done, _ = state
            return (c < n_chunks) & ~jnp.all(done)

        def body(state):
            c, transmittance, done, acc = state
            attrs = jax.lax.dynamic_slice_in_dim(attrs_padded, start + c * chunk, chunk, axis=0)
            terms = _chunk_terms(attrs, px, py, transmittance, done, cfg)
            acc = acc + terms["weights"] @ attrs[:, NUM_GEOMETRY:]
            return c + 1, terms["new_t"], terms["new_done"], acc

        init = (
            jnp.int32(0),
            jnp.ones((pixels,), dtype),
            jnp.zeros((pixels,), bool),
            jnp.zeros((pixels, num_values), dtype),
        )
        _, transmittance, _, acc = jax.lax.while_loop(cond, body, init)
        return acc, transmittance

    return jax.lax.map(one_tile, jnp.arange(cfg.num_tiles, dtype=jnp.int32))


def backward_xla(attrs_padded, chunk_starts, tile_counts, background, acc, t_final, g_values, g_alpha, cfg):
    """Per-slot gradients [padded_capacity, 6 + V] of (x, y, a, b, c, opacity, values) for one camera.

    acc / t_final: forward residuals [tiles, P, V] / [tiles, P]; g_values [tiles, P, V] is the cotangent of the
    composited values (background included), g_alpha [tiles, P] of the alpha = 1 - T output.
    """
    chunk = cfg.chunk
    dtype = attrs_padded.dtype
    width_attrs = attrs_padded.shape[1]

    def one_tile(tile, slot_grads):
        px, py = tile_pixel_centres(tile, cfg, attrs_padded.dtype)
        start, count = chunk_starts[tile], tile_counts[tile]
        n_chunks = -(-count // chunk)
        g = g_values[tile]
        g_total = jnp.sum(g * acc[tile], axis=1)  # sum_v g_v * accumulated_v
        g_transmittance = g @ background - g_alpha[tile]  # dL/dT_final
        tail = g_transmittance * t_final[tile]

        def cond(state):
            c, _, done, _, _ = state
            return (c < n_chunks) & ~jnp.all(done)

        def body(state):
            c, transmittance, done, running, slot_grads = state
            offset = start + c * chunk
            attrs = jax.lax.dynamic_slice_in_dim(attrs_padded, offset, chunk, axis=0)
            ca, cb, cc, opacity = attrs[:, 2], attrs[:, 3], attrs[:, 4], attrs[:, 5]
            values = attrs[:, NUM_GEOMETRY:]
            terms = _chunk_terms(attrs, px, py, transmittance, done, cfg)
            g_dot_value = g @ values.T  # [P, G]
            weights = terms["weights"]
            running_incl = running[:, None] + jnp.cumsum(weights * g_dot_value, axis=1)
            behind = g_total[:, None] - running_incl  # sum_v g_v * (value blended behind this Gaussian)
            one_minus = 1.0 - terms["alpha_used"]
            g_alpha_used = g_dot_value * terms["t_before"] - (behind + tail[:, None]) / one_minus
            unclamped = terms["contribute"] & (terms["alpha_raw"] <= cfg.alpha_max)
            g_alpha_raw = jnp.where(unclamped, g_alpha_used, 0.0)
            g_power = g_alpha_raw * terms["alpha_raw"]
            dx, dy = terms["dx"], terms["dy"]
            grad_x = jnp.sum(g_power * (-ca * dx - cb * dy), axis=0)
            grad_y = jnp.sum(g_power * (-cc * dy - cb * dx), axis=0)
            grad_a = jnp.sum(g_power * (-0.5 * dx * dx), axis=0)
            grad_b = jnp.sum(g_power * (-dx * dy), axis=0)
            grad_c = jnp.sum(g_power * (-0.5 * dy * dy), axis=0)
            safe_opacity = jnp.where(opacity > 0, opacity, 1.0)
            grad_opacity = jnp.sum(g_alpha_raw * terms["alpha_raw"], axis=0) / safe_opacity
            grad_values = weights.T @ g
            rows = jnp.concatenate(
                [jnp.stack([grad_x, grad_y, grad_a, grad_b, grad_c, grad_opacity], axis=1), grad_values], axis=1
            )
            slot_grads = jax.lax.dynamic_update_slice_in_dim(slot_grads, rows, offset, axis=0)
            return c + 1, terms["new_t"], terms["new_done"], running_incl[:, -1], slot_grads

        init = (
            jnp.int32(0),
            jnp.ones((cfg.pixels_per_tile,), dtype),
            jnp.zeros((cfg.pixels_per_tile,), bool),
            jnp.zeros((cfg.pixels_per_tile,), dtype),
            slot_grads,
        )
        return jax.lax.while_loop(cond, body, init)[-1]

    slot_grads = jnp.zeros((attrs_padded.shape[0], width_attrs), dtype)
    return jax.lax.fori_loop(0, cfg.num_tiles, one_tile, slot_grads)
