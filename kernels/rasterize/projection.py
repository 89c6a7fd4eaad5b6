"""EWA projection of 3-D Gaussians to screen space for one pinhole camera (pure jnp, differentiable).

Shapes: means [N, 3], quats [N, 4] (w, x, y, z; need not be normalised), scales [N, 3] (linear, not log),
viewmat [4, 4] world-to-camera, K [3, 3]. Batch over cameras with `jax.vmap`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.rasterize.conventions import Convention


class Projection(NamedTuple):
    """Screen-space Gaussians of one camera.

    means2d [N, 2] pixels (pixel centres at +0.5), conics [N, 3] upper triangle (a, b, c) of the inverse 2-D
    covariance, depths [N] view-space z, radii [N, 2] int32 box half-extents in pixels (0 = culled),
    covars2d [N, 3] dilated 2-D covariance (xx, xy, yy).
    """

    means2d: jax.Array
    conics: jax.Array
    depths: jax.Array
    radii: jax.Array
    covars2d: jax.Array


def quat_to_rotmat(quats: jax.Array) -> jax.Array:
    """Rotation matrices [..., 3, 3] from (w, x, y, z) quaternions [..., 4], normalised first."""
    quats = quats / jnp.linalg.norm(quats, axis=-1, keepdims=True)
    w, x, y, z = jnp.moveaxis(quats, -1, 0)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return jnp.stack(rows, axis=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: jax.Array, scales: jax.Array) -> jax.Array:
    """World-space covariances R S S^T R^T [..., 3, 3]."""
    rs = quat_to_rotmat(quats) * scales[..., None, :]
    return jnp.einsum("...ij,...kj->...ik", rs, rs)


def project_gaussians(
    means: jax.Array,
    quats: jax.Array,
    scales: jax.Array,
    viewmat: jax.Array,
    K: jax.Array,
    width: int,
    height: int,
    convention: Convention,
    *,
    tile_size: int = 16,
    near_plane: float | None = None,
    far_plane: float = 1e10,
) -> Projection:
    """Projects Gaussians with the EWA splatting approximation and the convention's dilation, culling and boxes."""
    near = convention.near_plane if near_plane is None else near_plane
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ rotation.T + translation
    covars_c = jnp.einsum("ij,njk,lk->nil", rotation, covariance_3d(quats, scales), rotation)
    tx, ty, tz = means_c[:, 0], means_c[:, 1], means_c[:, 2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    margin = convention.frustum_margin
    if convention.symmetric_frustum:
        lim_x_pos = lim_x_neg = (1.0 + margin) * tan_fovx
        lim_y_pos = lim_y_neg = (1.0 + margin) * tan_fovy
    else:
        lim_x_pos, lim_x_neg = (width - cx) / fx + margin * tan_fovx, cx / fx + margin * tan_fovx
        lim_y_pos, lim_y_neg = (height - cy) / fy + margin * tan_fovy, cy / fy + margin * tan_fovy
    # Behind-camera Gaussians are culled below; keep their arithmetic finite so no NaN reaches the gradients.
    safe_z = jnp.where(tz > near, tz, 1.0)
    clamped_x = safe_z * jnp.clip(tx / safe_z, -lim_x_neg, lim_x_pos)
    clamped_y = safe_z * jnp.clip(ty / safe_z, -lim_y_neg, lim_y_pos)
    zeros = jnp.zeros_like(safe_z)
    jacobian = jnp.stack(
        [fx / safe_z, zeros, -fx * clamped_x / safe_z**2, zeros, fy / safe_z, -fy * clamped_y / safe_z**2], axis=-1
    ).reshape(-1, 2, 3)
    cov2d = jnp.einsum("nij,njk,nlk->nil", jacobian, covars_c, jacobian)
    means2d = jnp.stack([fx * tx / safe_z + cx, fy * ty / safe_z + cy], axis=-1)

    cov_xx = cov2d[:, 0, 0] + convention.eps2d
    cov_yy = cov2d[:, 1, 1] + convention.eps2d
    cov_xy = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    det_raw = cov_xx * cov_yy - cov_xy * cov_xy
    if convention.name == "gsplat":
        det = jnp.maximum(det_raw, 1e-10)
        valid = (det > 0) & (tz > near) & (tz < far_plane)
    else:
        valid = (det_raw != 0) & (tz > near) & (tz < far_plane)
        det = jnp.where(det_raw != 0, det_raw, 1.0)
    conics = jnp.stack([cov_yy / det, -cov_xy / det, cov_xx / det], axis=-1)

    stop = jax.lax.stop_gradient
    if convention.radius_mode == "axis3.33":
        radius = jnp.stack([jnp.ceil(3.33 * jnp.sqrt(stop(cov_xx))), jnp.ceil(3.33 * jnp.sqrt(stop(cov_yy)))], -1)
        radius = jnp.where(valid[:, None], radius, 0.0)
        m2 = stop(means2d)
        inside = (
            (m2[:, 0] + radius[:, 0] > 0)
            & (m2[:, 0] - radius[:, 0] < width)
            & (m2[:, 1] + radius[:, 1] > 0)
            & (m2[:, 1] - radius[:, 1] < height)
        )
        radius = jnp.where(inside[:, None], radius, 0.0)
    else:
        mid = 0.5 * stop(cov_xx + cov_yy)
        spread = jnp.sqrt(jnp.maximum(0.1, mid * mid - stop(det)))
        r = jnp.ceil(3.0 * jnp.sqrt(jnp.maximum(mid + spread, mid - spread)))
        radius = jnp.stack([r, r], axis=-1)
        radius = jnp.where(valid[:, None], radius, 0.0)
        tile_min, tile_max = tile_rect(stop(means2d), radius, width, height, tile_size, convention)
        touched = jnp.prod(tile_max - tile_min, axis=-1) > 0
        radius = jnp.where(touched[:, None], radius, 0.0)
    return Projection(
        means2d=means2d,
        conics=conics,
        depths=tz,
        radii=radius.astype(jnp.int32),
        covars2d=jnp.stack([cov_xx, cov_xy, cov_yy], axis=-1),
    )


def tile_rect(
    means2d: jax.Array, radii: jax.Array, width: int, height: int, tile_size: int, convention: Convention
) -> tuple[jax.Array, jax.Array]:
    """Tile box [min, max) of each Gaussian, int32 [N, 2] each (x, y), clamped to the tile grid."""
    grid = jnp.array([-(-width // tile_size), -(-height // tile_size)], jnp.int32)
    radii = radii.astype(means2d.dtype)
    if convention.radius_mode == "eigen3":
        # graphdeco getRect: C-style truncation of (p -+ r) / tile, the max rounded up by adding tile - 1.
        lo = jnp.trunc((means2d - radii) / tile_size)
        hi = jnp.trunc((means2d + radii + tile_size - 1) / tile_size)
    else:
        lo = jnp.floor((means2d - radii) / tile_size)
        hi = jnp.ceil((means2d + radii) / tile_size)
    lo = jnp.clip(lo.astype(jnp.int32), 0, grid)
    hi = jnp.clip(hi.astype(jnp.int32), 0, grid)
    return lo, hi
