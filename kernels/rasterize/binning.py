"""Tile binning with a fixed intersection capacity: (tile, depth) sort and chunk-aligned per-tile lists.

Every (Gaussian, tile) pair the Gaussian's box touches is one intersection. Intersections are emitted
Gaussian-major into a buffer of static `capacity`; if there are more, the excess is dropped and `overflow` is set
(never silently: `rasterize` returns the flag and the true count, `check_overflow` raises). The buffer is then sorted
by (tile id, depth) and re-laid out so that each tile's list starts at a multiple of `chunk` (the compositors read
and write whole chunks, so no two tiles ever share a chunk and the backward pass needs no atomics).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.rasterize.conventions import Convention
from kernels.rasterize.projection import tile_rect


class TileBins(NamedTuple):
    """Sorted intersections of one camera.

    tiles_per_gaussian [N] int32; n_intersections scalar int32 (true count, may exceed capacity);
    overflow scalar bool; sorted_tile_ids / sorted_gaussian_ids / sorted_emission_ids [capacity] int32 (invalid slots:
    tile = num_tiles, gaussian = N); tile_offsets [num_tiles + 1] int32 into the sorted buffer;
    chunk_starts [num_tiles] int32 start of each tile in the chunk-aligned buffer, tile_counts [num_tiles] int32;
    padded_gaussian_ids / padded_sorted_slot [padded_capacity] int32 (padding: gaussian N, slot capacity).
    """

    tiles_per_gaussian: jax.Array
    n_intersections: jax.Array
    overflow: jax.Array
    sorted_tile_ids: jax.Array
    sorted_gaussian_ids: jax.Array
    sorted_emission_ids: jax.Array
    tile_offsets: jax.Array
    chunk_starts: jax.Array
    tile_counts: jax.Array
    padded_gaussian_ids: jax.Array
    padded_sorted_slot: jax.Array


def padded_capacity(capacity: int, num_tiles: int, chunk: int) -> int:
    """Size of the chunk-aligned buffer: every tile may waste up to chunk - 1 slots."""
    total = capacity + num_tiles * (chunk - 1)
    return -(-total // chunk) * chunk


def bin_gaussians(
    means2d: jax.Array,
    radii: jax.Array,
    depths: jax.Array,
    width: int,
    height: int,
    convention: Convention,
    *,
    capacity: int,
    tile_size: int = 16,
    chunk: int = 32,
) -> TileBins:
    """Builds the (tile, depth)-sorted intersection lists of one camera."""
    n = means2d.shape[0]
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    num_tiles = tiles_x * tiles_y
    means2d = jax.lax.stop_gradient(means2d)
    depths = jax.lax.stop_gradient(depths)
    lo, hi = tile_rect(means2d, radii, width, height, tile_size, convention)
    extent = hi - lo
    visible = jnp.all(radii > 0, axis=-1)
    tiles_per_gaussian = jnp.where(visible, extent[:, 0] * extent[:, 1], 0).astype(jnp.int32)
    cum = jnp.cumsum(tiles_per_gaussian)
    n_intersections = cum[-1] if n else jnp.int32(0)

    slot = jnp.arange(capacity, dtype=jnp.int32)
    gaussian = jnp.searchsorted(cum, slot, side="right").astype(jnp.int32)
    valid = slot < n_intersections
    gaussian_c = jnp.minimum(gaussian, n - 1)
    local = slot - (cum[gaussian_c] - tiles_per_gaussian[gaussian_c])
    width_tiles = jnp.maximum(extent[gaussian_c, 0], 1)
    tile_x = lo[gaussian_c, 0] + local % width_tiles
    tile_y = lo[gaussian_c, 1] + local // width_tiles
    tile_id = jnp.where(valid, tile_y * tiles_x + tile_x, num_tiles).astype(jnp.int32)
    depth = jnp.where(valid, depths[gaussian_c], jnp.inf)
    sorted_tile, _, sorted_emission = jax.lax.sort((tile_id, depth, slot), num_keys=2, is_stable=True)
    sorted_gaussian = jnp.where(sorted_tile < num_tiles, gaussian_c[sorted_emission], n).astype(jnp.int32)

    tile_offsets = jnp.searchsorted(sorted_tile, jnp.arange(num_tiles + 1, dtype=jnp.int32), side="left")
    tile_offsets = tile_offsets.astype(jnp.int32)
    tile_counts = tile_offsets[1:] - tile_offsets[:-1]
    padded_counts = -(-tile_counts // chunk) * chunk
    chunk_ends = jnp.cumsum(padded_counts).astype(jnp.int32)
    chunk_starts = chunk_ends - padded_counts

    size = padded_capacity(capacity, num_tiles, chunk)
    position = jnp.arange(size, dtype=jnp.int32)
    tile_of_position = jnp.minimum(jnp.searchsorted(chunk_ends, position, side="right"), num_tiles - 1)
    rank = position - chunk_starts[tile_of_position]
    in_list = (rank < tile_counts[tile_of_position]) & (position < chunk_ends[-1])
    sorted_slot = jnp.where(in_list, tile_offsets[tile_of_position] + rank, capacity).astype(jnp.int32)
    padded_gaussian = jnp.where(in_list, sorted_gaussian[jnp.minimum(sorted_slot, capacity - 1)], n)
    return TileBins(
        tiles_per_gaussian=tiles_per_gaussian,
        n_intersections=n_intersections.astype(jnp.int32),
        overflow=n_intersections > capacity,
        sorted_tile_ids=sorted_tile,
        sorted_gaussian_ids=sorted_gaussian,
        sorted_emission_ids=sorted_emission,
        tile_offsets=tile_offsets,
        chunk_starts=chunk_starts,
        tile_counts=tile_counts,
        padded_gaussian_ids=padded_gaussian.astype(jnp.int32),
        padded_sorted_slot=sorted_slot,
    )
