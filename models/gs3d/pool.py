"""A fixed-capacity pool of 3-D Gaussians and graphdeco's densification as pure functions on static shapes.

A pool is a dict of per-Gaussian arrays, each with the capacity C as its leading axis, plus an `active` mask [C].
The core attributes (`CORE_ATTRIBUTES`) are what the rasterizer needs; any other entry (a Wild-GS 32-d intrinsic
feature, say) rides along: clone copies it, split copies it to both halves, prune frees its slot. Inactive slots
render nothing (the model culls them) and receive no gradient.

Densification never changes a shape: clones and the second half of a split are written into free slots, a split
overwrites its original slot with the first half, and pruning clears `active`. Each operation returns, per slot, the
slot it was copied from (`source`) and whether its optimizer moments start from zero (`fresh`), so the same remap
applies to every per-Gaussian optimizer-state array (`remap_slot_state`). Only when the free slots run out does the
pool grow (`grow`, capacity doubled: one new shape, one recompile).

Positions are stored in units of `position_scale` (the scene extent): Adam's update is invariant to the gradient's
scale, so a learning rate `lr` on the stored positions moves the world means by `lr * extent`, which is graphdeco's
extent-scaled position learning rate without a config that depends on the scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The pool entries the renderer reads (positions are in units of `position_scale`).
POSITIONS, QUATS, LOG_SCALES, OPACITY_LOGITS, SH_DC, SH_REST = (
    "positions", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest"
)  # fmt: skip
CORE_ATTRIBUTES = (POSITIONS, QUATS, LOG_SCALES, OPACITY_LOGITS, SH_DC, SH_REST)
SH_C0 = 0.28209479177387814


def num_sh_coefficients(degree: int) -> int:
    """(degree + 1)^2 SH coefficients per colour channel."""
    return (int(degree) + 1) ** 2


def inverse_sigmoid(x):
    """logit(x), for numpy or jax arrays."""
    return np.log(x / (1.0 - x)) if isinstance(x, (float, np.ndarray)) else jnp.log(x / (1.0 - x))


def rgb_to_sh_dc(rgb: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] to the degree-0 SH coefficient that renders them (graphdeco `RGB2SH`)."""
    return (np.asarray(rgb, np.float32) - 0.5) / SH_C0


def mean_sq_dist_knn(xyz: np.ndarray, k: int = 3, *, chunk: int = 2048) -> np.ndarray:
    """Mean squared distance of each point to its `k` nearest other points (graphdeco's `distCUDA2`, k = 3).

    scipy's KD-tree when scipy is installed, else a chunked brute force (fine up to ~1e5 points).
    """
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    n = len(xyz)
    if n < 2:
        raise ValueError(f"initialising scales from nearest neighbours needs at least 2 SfM points, got {n}")
    k = min(k, n - 1)
    try:
        from scipy.spatial import cKDTree
    except ImportError:  # pragma: no cover - scipy is part of the test environment
        cKDTree = None
    if cKDTree is not None:
        dist, _ = cKDTree(xyz).query(xyz, k=k + 1)
        return np.mean(np.square(dist[:, 1:]), axis=1).astype(np.float32)
    out = np.empty(n, np.float32)
    for start in range(0, n, chunk):
        block = xyz[start : start + chunk]
        d2 = np.sum(np.square(block[:, None, :] - xyz[None, :, :]), axis=-1)
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        out[start : start + chunk] = np.mean(np.partition(d2, k - 1, axis=1)[:, :k], axis=1)
    return out


def init_from_points(
    xyz: np.ndarray,
    rgb: np.ndarray,
    capacity: int,
    *,
    sh_degree: int = 3,
    position_scale: float = 1.0,
    initial_opacity: float = 0.1,
) -> dict[str, np.ndarray]:
    """A pool (numpy, with "active") from SfM points: graphdeco's `create_from_pcd`.

    Colours (uint8 or [0, 1] floats) go to the SH dc term, the higher SH bands start at zero, scales are
    sqrt(mean squared distance to the 3 nearest neighbours) on all three axes, rotations identity, opacity 0.1.
    Slots past the points are inactive.
    """
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb).reshape(-1, 3)
    n = len(xyz)
    if len(rgb) != n:
        raise ValueError(f"{n} SfM points but {len(rgb)} colours")
    if n > capacity:
        raise ValueError(f"{n} SfM points do not fit a pool of capacity {capacity}; raise the capacity")
    if position_scale <= 0:
        raise ValueError(f"position_scale must be positive (the scene extent), got {position_scale}")
    colours = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    dist2 = np.maximum(mean_sq_dist_knn(xyz), 1e-7)
    pool = empty_pool(capacity, sh_degree=sh_degree)
    pool[POSITIONS][:n] = xyz / position_scale
    pool[LOG_SCALES][:n] = np.log(np.sqrt(dist2))[:, None]
    pool[OPACITY_LOGITS][:] = inverse_sigmoid(float(initial_opacity))
    pool[SH_DC][:n, 0] = rgb_to_sh_dc(colours)
    pool["active"][:n] = True
    return pool


def empty_pool(capacity: int, *, sh_degree: int = 3) -> dict[str, np.ndarray]:
    """An all-inactive pool of `capacity` slots (numpy): identity rotations, unit-ish scales, zero colours."""
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    quats = np.zeros((capacity, 4), np.float32)
    quats[:, 0] = 1.0
    return {
        POSITIONS: np.zeros((capacity, 3), np.float32),
        QUATS: quats,
        LOG_SCALES: np.full((capacity, 3), math.log(1e-2), np.float32),
        OPACITY_LOGITS: np.full((capacity,), inverse_sigmoid(0.1), np.float32),
        SH_DC: np.zeros((capacity, 1, 3), np.float32),
        SH_REST: np.zeros((capacity, num_sh_coefficients(sh_degree) - 1, 3), np.float32),
        "active": np.zeros((capacity,), bool),
    }


# -------------------------------------------------------------------------------------------------- statistics
class DensifyStats(NamedTuple):
    """Per-slot densification statistics (graphdeco `xyz_gradient_accum`, `denom`, `max_radii2D`)."""

    grad_accum: jax.Array  # [C] sum over visible views of |d loss / d mean2d| in NDC units
    vis_count: jax.Array  # [C] number of views in which the Gaussian was visible
    max_radii: jax.Array  # [C] largest screen radius (pixels) since the last densification


def zero_stats(capacity: int) -> DensifyStats:
    """All-zero statistics of a pool of `capacity` slots."""
    z = jnp.zeros((capacity,), jnp.float32)
    return DensifyStats(z, z, z)


def accumulate_stats(stats: DensifyStats, screen_grad: jax.Array, radii: jax.Array, width, height) -> DensifyStats:
    """Add one view: `screen_grad` [C, 2] d loss / d mean2d in pixels, `radii` [C] or [C, 2] (0 = not visible).

    graphdeco's statistic is the gradient in NDC, d loss / d ndc = d loss / d pixel * (W / 2, H / 2).
    """
    radius = jnp.max(radii, axis=-1) if radii.ndim == 2 else radii
    visible = radius > 0
    half = jnp.stack([jnp.asarray(width, jnp.float32), jnp.asarray(height, jnp.float32)]) * 0.5
    norm = jnp.linalg.norm(screen_grad.astype(jnp.float32) * half, axis=-1)
    return DensifyStats(
        grad_accum=stats.grad_accum + jnp.where(visible, norm, 0.0),
        vis_count=stats.vis_count + visible.astype(jnp.float32),
        max_radii=jnp.where(visible, jnp.maximum(stats.max_radii, radius.astype(jnp.float32)), stats.max_radii),
    )


# ---------------------------------------------------------------------------------------------- densification
class DensifyThresholds(NamedTuple):
    """graphdeco's densification thresholds in world / pixel units (arrays, so changing them never recompiles)."""

    grad: float | jax.Array = 2e-4  # average NDC gradient norm that triggers clone / split
    clone_max_scale: float | jax.Array = 0.01  # percent_dense * extent: larger Gaussians split, smaller clone
    min_opacity: float | jax.Array = 0.005
    max_screen_size: float | jax.Array = math.inf  # pixels; inf disables (graphdeco: 20 after the first reset)
    max_world_scale: float | jax.Array = math.inf  # world units; inf disables (graphdeco: 0.1 * extent, same time)


class SlotRemap(NamedTuple):
    """How a pool operation moved slots: slot i now holds a copy of slot `source[i]`; `fresh[i]` zeroes its moments."""

    source: jax.Array  # [C] int32
    fresh: jax.Array  # [C] bool


def quat_to_rotmat(quats: jax.Array) -> jax.Array:
    """Rotation matrices [N, 3, 3] of (w, x, y, z) quaternions of any norm."""
    # A zero quaternion (a padded, never-used slot) gives a zero matrix instead of NaNs.
    q = quats / jnp.maximum(jnp.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return jnp.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(-1, 3, 3)  # fmt: skip


def _gather(pool: Mapping[str, jax.Array], source: jax.Array) -> dict[str, jax.Array]:
    return {name: jnp.take(value, source, axis=0) for name, value in pool.items()}


def densify_and_prune(
    pool: Mapping[str, jax.Array],
    stats: DensifyStats,
    key: jax.Array,
    thresholds: DensifyThresholds,
    *,
    position_scale: float | jax.Array = 1.0,
    split_samples: int = 2,
) -> tuple[dict[str, jax.Array], SlotRemap, dict[str, jax.Array]]:
    """graphdeco's `densify_and_prune` on a fixed-capacity pool; returns (pool, remap, counts).

    Gaussians whose average NDC gradient reaches `thresholds.grad` are cloned (largest scale <= clone_max_scale: a
    copy in a free slot) or split (larger: `split_samples` = 2 positions drawn from N(mean, R S), scales divided by
    0.8 * 2 = 1.6; the first half overwrites the original slot, the second takes a free slot). Then every active
    Gaussian with opacity < min_opacity, a screen radius > max_screen_size or a largest world scale >
    max_world_scale is pruned (new Gaussians have a zero radius, as graphdeco's). Candidates beyond the free slots
    are left unchanged (grow the pool first, see `densify_demand`). `counts` holds n_clone, n_split, n_prune,
    n_active and n_dropped (candidates that found no free slot).
    """
    if split_samples != 2:
        raise ValueError(f"split_samples must be 2 (graphdeco's N; each split uses one free slot), got {split_samples}")
    active = pool["active"]
    capacity = active.shape[0]
    slots = jnp.arange(capacity, dtype=jnp.int32)
    grads = jnp.where(stats.vis_count > 0, stats.grad_accum / jnp.maximum(stats.vis_count, 1.0), 0.0)
    scales = jnp.exp(pool[LOG_SCALES])
    max_scale = jnp.max(scales, axis=-1)
    candidate = active & (grads >= thresholds.grad)
    small = max_scale <= thresholds.clone_max_scale

    # The k-th candidate (by slot order) gets the k-th free slot; those past the free slots are dropped.
    free = ~active
    n_free = jnp.sum(free)
    rank = jnp.cumsum(candidate) - 1
    granted = candidate & (rank < n_free)
    free_slots = jnp.nonzero(free, size=capacity, fill_value=capacity)[0]
    target = jnp.where(granted, free_slots[jnp.clip(rank, 0, capacity - 1)], capacity)
    source = slots.at[target].set(slots, mode="drop")
    new_slot = source != slots  # a free slot that now holds a clone / a split half
    clone_origin, split_origin = granted & small, granted & ~small
    split_slot = split_origin | (new_slot & split_origin[source])

    out = _gather(pool, source)
    out["active"] = active | new_slot
    # Split halves: positions sampled in the original's frame, scale / (0.8 N); the gather already gave each half
    # the original's attributes, including any extra per-Gaussian features.
    noise = jax.random.normal(key, (capacity, 3), jnp.float32) * jnp.exp(out[LOG_SCALES])
    offset = jnp.einsum("nij,nj->ni", quat_to_rotmat(out[QUATS]), noise) / position_scale
    out[POSITIONS] = jnp.where(split_slot[:, None], out[POSITIONS] + offset, out[POSITIONS])
    out[LOG_SCALES] = jnp.where(split_slot[:, None], out[LOG_SCALES] - jnp.log(0.8 * split_samples), out[LOG_SCALES])

    # Prune (graphdeco prunes after densifying, so fresh clones are tested too; their screen radius is 0).
    max_radii = jnp.where(new_slot | split_slot, 0.0, stats.max_radii)
    opacity = jax.nn.sigmoid(out[OPACITY_LOGITS])
    new_max_scale = jnp.max(jnp.exp(out[LOG_SCALES]), axis=-1)
    prune = out["active"] & (
        (opacity < thresholds.min_opacity)
        | (max_radii > thresholds.max_screen_size)
        | (new_max_scale > thresholds.max_world_scale)
    )
    out["active"] = out["active"] & ~prune
    fresh = new_slot | split_slot | prune
    counts = {
        "n_clone": jnp.sum(clone_origin),
        "n_split": jnp.sum(split_origin),
        "n_prune": jnp.sum(prune),
        "n_dropped": jnp.sum(candidate & ~granted),
        "n_active": jnp.sum(out["active"]),
    }
    return out, SlotRemap(source.astype(jnp.int32), fresh), counts


def densify_demand(pool: Mapping[str, jax.Array], stats: DensifyStats, grad_threshold) -> jax.Array:
    """Slots the next `densify_and_prune` needs: active Gaussians + clone / split candidates (before pruning)."""
    active = pool["active"]
    grads = jnp.where(stats.vis_count > 0, stats.grad_accum / jnp.maximum(stats.vis_count, 1.0), 0.0)
    return jnp.sum(active) + jnp.sum(active & (grads >= grad_threshold))


def reset_opacity(pool: Mapping[str, jax.Array], max_opacity: float = 0.01) -> dict[str, jax.Array]:
    """graphdeco `reset_opacity`: opacity <- min(opacity, 0.01) (its optimizer moments are reset by the caller)."""
    out = dict(pool)
    clipped = jnp.minimum(jax.nn.sigmoid(pool[OPACITY_LOGITS]), max_opacity)
    out[OPACITY_LOGITS] = inverse_sigmoid(clipped).astype(pool[OPACITY_LOGITS].dtype)
    return out


def remap_slot_state(tree, remap: SlotRemap, capacity: int, names=None):
    """Apply a slot remap to every array of `tree` whose leading axis is `capacity` (per-Gaussian optimizer moments,
    statistics) and, when `names` is given, whose tree path mentions one of them: gather by `remap.source`, zero
    where `remap.fresh`. Other leaves (Adam's step count, a network's weights) are kept."""

    def one(path, x):
        if not hasattr(x, "shape") or x.ndim == 0 or x.shape[0] != capacity:
            return x
        if names is not None and not (_path_names(path) & set(names)):
            return x
        moved = jnp.take(x, remap.source, axis=0)
        fresh = remap.fresh.reshape((capacity,) + (1,) * (x.ndim - 1))
        return jnp.where(fresh, jnp.zeros_like(moved), moved)

    return jax.tree_util.tree_map_with_path(one, tree)


def grow(tree, capacity: int, new_capacity: int, names=None, fill: Callable[[jax.Array, int], jax.Array] | None = None):
    """Pad every array of `tree` with leading axis `capacity` (and, with `names`, a path mentioning one of them) to
    `new_capacity` slots: zeros, or `fill(x, extra)`. Padding an `active` mask with zeros leaves the new slots free.
    """
    if new_capacity < capacity:
        raise ValueError(f"a pool only grows: new capacity {new_capacity} < {capacity}")

    def one(path, x):
        if not hasattr(x, "shape") or x.ndim == 0 or x.shape[0] != capacity:
            return x
        if names is not None and not (_path_names(path) & set(names)):
            return x
        extra = new_capacity - capacity
        pad = fill(x, extra) if fill is not None else jnp.zeros((extra,) + x.shape[1:], x.dtype)
        return jnp.concatenate([x, pad], axis=0)

    return jax.tree_util.tree_map_with_path(one, tree)


def _path_names(path) -> set[str]:
    names = set()
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.add(str(getattr(key, attr)))
    return names
