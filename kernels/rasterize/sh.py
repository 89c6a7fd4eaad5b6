"""Real spherical harmonics of degree 0-3 in the 3DGS basis (graphdeco's SH_C constants; gsplat uses the same basis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: jax.Array) -> jax.Array:
    """SH basis values [..., (degree + 1)^2] at unit directions dirs [..., 3]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3; got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    basis = [jnp.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return jnp.stack(basis, axis=-1)


def eval_sh(degree: int, dirs: jax.Array, coeffs: jax.Array) -> jax.Array:
    """Colours [..., C] from SH coefficients coeffs [..., K, C] (K >= (degree+1)^2) along directions dirs [..., 3].

    Directions are normalised here. No +0.5 offset or clamp: `rasterize` applies those, as both references do.
    """
    num_bases = (degree + 1) ** 2
    if coeffs.shape[-2] < num_bases:
        raise ValueError(f"degree {degree} needs {num_bases} SH coefficients; got {coeffs.shape[-2]}")
    dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    return jnp.einsum("...k,...kc->...c", sh_basis(degree, dirs), coeffs[..., :num_bases, :])
