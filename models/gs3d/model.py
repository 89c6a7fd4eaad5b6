"""Plain 3-D Gaussian splatting (Kerbl et al. 2023) as an NNX module over a fixed-capacity pool (`pool.py`).

    model = zoo.create_model("gs3d", capacity=4096)
    model.load_pool(init_from_points(xyz, rgb, 4096, position_scale=extent), position_scale=extent)
    out = model.render(viewmat, K, width, height)        # kernels.rasterize.RasterOutput; out.image [1, H, W, 3]

Trained parameters (`nnx.Param`, leading axis = capacity): positions (world means / position_scale), quats (w, x, y,
z), log_scales, opacity_logits, sh_dc [C, 1, 3], sh_rest [C, 15, 3], any `extra_attributes`, and `screen_offset`
[C, 2], a zero-valued probe whose gradient is the screen-space mean gradient densification needs (it never moves a
Gaussian: the render adds `p - stop_gradient(p)`). Pool state (`PoolState`, not optimized, checkpointed): the active
mask, densification statistics, the last view's radii, the iteration counter (SH degree warm-up) and
`position_scale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.rasterize import RasterOutput, rasterize
from models.gs3d import pool as pool_lib
from models.gs3d.pool import (
    CORE_ATTRIBUTES,
    DensifyStats,
)
from zoo.registry import PretrainedCfg, register_model

SCREEN_OFFSET = "screen_offset"
STAT_NAMES = ("grad_accum", "vis_count", "max_radii")


class PoolState(nnx.Variable):
    """State of the Gaussian pool that the optimizer never touches: active mask, statistics, counters."""


class GaussianSplats(nnx.Module):
    """A fixed-capacity pool of 3-D Gaussians rendered with `kernels.rasterize`.

    Args:
      capacity: number of slots C (inactive slots render nothing).
      sh_degree: the largest SH degree (0-3); the rendered degree warms up by one every `sh_degree_interval` steps.
      extra_attributes: name -> per-Gaussian trailing shape of additional trained attributes (e.g. {"features":
        (32,)}), initialised to zeros; they clone, split and prune with their Gaussian.
      convention, intersection_capacity, impl, tile_size: passed to `rasterize` (capacity None: 16 per slot).
      position_scale: world units per stored position unit (the scene extent; `load_pool` sets it).
    """

    def __init__(
        self,
        capacity: int = 4096,
        *,
        sh_degree: int = 3,
        sh_degree_interval: int = 1000,
        extra_attributes: Mapping[str, tuple[int, ...]] | None = None,
        convention: str = "3dgs",
        intersection_capacity: int | None = None,
        impl: str = "auto",
        tile_size: int = 16,
        position_scale: float = 1.0,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # the pool is initialised from data (load_pool), not at random
        if not 0 <= int(sh_degree) <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        capacity = int(capacity)
        self.max_sh_degree = int(sh_degree)
        self.sh_degree_interval = int(sh_degree_interval)
        self.convention = convention
        self.intersection_capacity = None if not intersection_capacity else int(intersection_capacity)
        self.impl = impl
        self.tile_size = int(tile_size)
        extra = {str(k): tuple(int(d) for d in v) for k, v in dict(extra_attributes or {}).items()}
        clash = sorted(set(extra) & (set(CORE_ATTRIBUTES) | {SCREEN_OFFSET, "active"}))
        if clash:
            raise ValueError(f"extra_attributes {clash} clash with the core pool entries {CORE_ATTRIBUTES}")
        self.extra_attribute_shapes = tuple(sorted(extra.items()))
        empty = pool_lib.empty_pool(capacity, sh_degree=self.max_sh_degree)
        for name in CORE_ATTRIBUTES:
            setattr(self, name, nnx.Param(jnp.asarray(empty[name])))
        for name, shape in self.extra_attribute_shapes:
            setattr(self, name, nnx.Param(jnp.zeros((capacity, *shape), jnp.float32)))
        self.screen_offset = nnx.Param(jnp.zeros((capacity, 2), jnp.float32))
        self.active = PoolState(jnp.zeros((capacity,), bool))
        for name in STAT_NAMES:
            setattr(self, name, PoolState(jnp.zeros((capacity,), jnp.float32)))
        self.last_radii = PoolState(jnp.zeros((capacity,), jnp.float32))
        self.iteration = PoolState(jnp.zeros((), jnp.int32))
        self.position_scale = PoolState(jnp.asarray(position_scale, jnp.float32))

    # ---- the pool as a dict ----------------------------------------------------------------------------------------
    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The per-Gaussian trained attributes (core, then extras; `screen_offset` is a probe, not an attribute)."""
        return CORE_ATTRIBUTES + tuple(name for name, _ in self.extra_attribute_shapes)

    @property
    def capacity(self) -> int:
        """The number of slots C."""
        return int(self.positions.value.shape[0])

    def pool(self) -> dict[str, jax.Array]:
        """{attribute: [C, ...]} plus "active" [C] bool."""
        out = {name: getattr(self, name).value for name in self.attribute_names}
        out["active"] = self.active.value
        return out

    def set_pool(self, pool: Mapping[str, Any]) -> None:
        """Write the entries of a pool dict (same capacity; missing entries are kept)."""
        for name in (*self.attribute_names, "active"):
            if name in pool:
                variable = getattr(self, name)
                value = jnp.asarray(pool[name], variable.value.dtype)
                if value.shape != variable.value.shape:
                    raise ValueError(f"pool entry {name!r} has shape {value.shape}, expected {variable.value.shape}")
                variable.value = value

    def load_pool(self, pool: Mapping[str, Any], *, position_scale: float | None = None) -> None:
        """Initialise from a pool dict (`pool.init_from_points`), resetting statistics and the iteration counter."""
        self.set_pool(pool)
        if position_scale is not None:
            self.position_scale.value = jnp.asarray(position_scale, jnp.float32)
        self.set_stats(pool_lib.zero_stats(self.capacity))
        self.iteration.value = jnp.zeros((), jnp.int32)

    def stats(self) -> DensifyStats:
        """The densification statistics."""
        return DensifyStats(*(getattr(self, name).value for name in STAT_NAMES))

    def set_stats(self, stats: DensifyStats) -> None:
        """Write the densification statistics."""
        for name, value in zip(STAT_NAMES, stats, strict=True):
            getattr(self, name).value = value

    def num_active(self) -> jax.Array:
        """The number of active Gaussians."""
        return jnp.sum(self.active.value)

    @property
    def slot_variable_names(self) -> tuple[str, ...]:
        """Every variable with one row per slot: attributes, the screen probe, the mask, the statistics."""
        return (*self.attribute_names, SCREEN_OFFSET, "active", *STAT_NAMES, "last_radii")

    def grow(self, new_capacity: int) -> None:
        """Pad every per-slot variable to `new_capacity` slots (new slots inactive; identity rotations)."""
        capacity = self.capacity
        if new_capacity < capacity:
            raise ValueError(f"a pool only grows: new capacity {new_capacity} < {capacity}")
        empty = pool_lib.empty_pool(new_capacity - capacity, sh_degree=self.max_sh_degree)
        for name in self.slot_variable_names:
            variable = getattr(self, name)
            old = variable.value
            pad = empty[name] if name in empty else np.zeros((new_capacity - capacity, *old.shape[1:]))
            variable.value = jnp.concatenate([old, jnp.asarray(pad, old.dtype)], axis=0)

    # ---- rendering -------------------------------------------------------------------------------------------------
    def means(self) -> jax.Array:
        """World-space means [C, 3]."""
        return self.positions.value * self.position_scale.value

    def active_sh_degree(self) -> jax.Array:
        """graphdeco's warm-up: degree min(i // interval, max) at 1-based iteration i = `iteration` + 1."""
        if self.sh_degree_interval <= 0:
            return jnp.asarray(self.max_sh_degree, jnp.int32)
        return jnp.minimum((self.iteration.value + 1) // self.sh_degree_interval, self.max_sh_degree)

    def sh_coefficients(self) -> jax.Array:
        """SH coefficients [C, (max_degree + 1)^2, 3] with the bands above the active degree zeroed (so they get no
        gradient and Adam leaves them at zero, as graphdeco's unused bands)."""
        num = pool_lib.num_sh_coefficients(self.max_sh_degree)
        band = np.floor(np.sqrt(np.arange(1, num))).astype(np.int32)  # band of each rest coefficient
        keep = (jnp.asarray(band) <= self.active_sh_degree()).astype(jnp.float32)
        return jnp.concatenate([self.sh_dc.value, self.sh_rest.value * keep[None, :, None]], axis=1)

    def render(
        self,
        viewmat: jax.Array,
        K: jax.Array,
        width: int,
        height: int,
        *,
        background: jax.Array | None = None,
        record_radii: bool = False,
    ) -> RasterOutput:
        """Render one camera (viewmat [4, 4] world-to-camera, K [3, 3]); outputs have a leading batch axis of 1.

        Inactive slots are moved behind the camera (culled by the near plane) with opacity 0, so they occupy no
        intersection slots and receive no gradient. `record_radii` stores the radii for `accumulate_stats`.
        """
        active = self.active.value
        rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
        behind = -rotation.T @ translation - rotation[2]  # one unit behind the camera centre
        means = jnp.where(active[:, None], self.means(), behind[None, :])
        identity = jnp.array([1.0, 0.0, 0.0, 0.0], jnp.float32)
        quats = jnp.where(active[:, None], self.quats.value, identity)
        scales = jnp.where(active[:, None], jnp.exp(self.log_scales.value), 1e-3)
        opacities = jnp.where(active, jax.nn.sigmoid(self.opacity_logits.value), 0.0)
        probe = self.screen_offset.value
        out = rasterize(
            means, quats, scales, opacities, self.sh_coefficients(), viewmat, K, int(width), int(height),
            sh_degree=self.max_sh_degree, background=background, convention=self.convention,
            capacity=self.intersection_capacity, tile_size=self.tile_size, impl=self.impl,
            means2d_offset=(probe - jax.lax.stop_gradient(probe))[None],
        )  # fmt: skip
        if record_radii:
            radius = jnp.max(out.radii[0], axis=-1).astype(jnp.float32)
            self.last_radii.value = jax.lax.stop_gradient(jnp.where(active, radius, 0.0))
        return out

    def __call__(self, viewmat: jax.Array, K: jax.Array, width: int, height: int, **kwargs) -> RasterOutput:
        """`render`."""
        return self.render(viewmat, K, width, height, **kwargs)

    # ---- densification statistics ----------------------------------------------------------------------------------
    def accumulate_stats(self, screen_grad: jax.Array, width, height, enabled: jax.Array | bool = True) -> None:
        """Add the last rendered view (`render(record_radii=True)`) to the statistics: `screen_grad` [C, 2] is the
        gradient of the loss with respect to `screen_offset` (pixels); nothing is added where `enabled` is False."""
        new = pool_lib.accumulate_stats(self.stats(), screen_grad, self.last_radii.value, width, height)
        self.set_stats(jax.tree.map(lambda n, o: jnp.where(enabled, n, o), new, self.stats()))


def _cfg() -> PretrainedCfg:
    return PretrainedCfg(
        input_size=(0, 0, 3), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=0,
        url="https://github.com/graphdeco-inria/gaussian-splatting", license="(no weights: trained per scene)",
        paper="https://arxiv.org/abs/2308.04079",
        notes="Per-scene model: train it with configs/gs3d.py on a COLMAP scene; no official weights.",
    )  # fmt: skip


@register_model("gs3d", cfg=_cfg())
def gs3d(*, rngs: nnx.Rngs | None = None, **overrides: Any) -> GaussianSplats:
    """Plain 3D Gaussian splatting over a fixed-capacity pool (`GaussianSplats`); the pool starts empty."""
    return GaussianSplats(rngs=rngs, **overrides)
