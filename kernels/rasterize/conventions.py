"""The two named rasterization conventions: graphdeco's original 3DGS constants and gsplat 1.5.3's.

Both share the camera model: world-to-camera `viewmats` [4, 4] (OpenCV axes, +z forward) and pinhole intrinsics
`Ks` [3, 3] with pixel centres at integer + 0.5 (gsplat's convention). graphdeco puts pixel centres at integers and
derives the principal point from the field of view; that is the same camera with cx shifted by 0.5, so only the
constants below differ between the conventions.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Convention:
    """Numerical constants of one rasterizer convention (hashable: used as a static argument)."""

    name: str
    near_plane: float  # Gaussians with view-space z <= near_plane are culled
    eps2d: float  # low-pass dilation added to the diagonal of the 2-D covariance
    frustum_margin: float  # EWA Jacobian clamp: x/z within the image frustum widened by margin * tan(fov/2)
    symmetric_frustum: bool  # graphdeco clamps at +-(1 + margin) tan(fov/2); gsplat uses the principal point
    radius_mode: str  # "eigen3": ceil(3 sqrt(lambda_max)) square box; "axis3.33": ceil(3.33 sqrt(Sigma_ii)) per axis
    alpha_max: float  # alpha clamp
    alpha_min: float  # Gaussians with alpha below this are skipped for a pixel
    transmittance_min: float  # compositing stops before a Gaussian that would bring T below this
    stop_inclusive: bool  # gsplat stops when next_T <= t_min, graphdeco when next_T < t_min


CONVENTIONS: dict[str, Convention] = {
    "3dgs": Convention(
        name="3dgs",
        near_plane=0.2,
        eps2d=0.3,
        frustum_margin=0.3,
        symmetric_frustum=True,
        radius_mode="eigen3",
        alpha_max=0.99,
        alpha_min=1.0 / 255.0,
        transmittance_min=1e-4,
        stop_inclusive=False,
    ),
    "gsplat": Convention(
        name="gsplat",
        near_plane=0.01,
        eps2d=0.3,
        frustum_margin=0.3,
        symmetric_frustum=False,
        radius_mode="axis3.33",
        alpha_max=0.999,
        alpha_min=1.0 / 255.0,
        transmittance_min=1e-4,
        stop_inclusive=True,
    ),
}


def get_convention(convention: str | Convention) -> Convention:
    """Looks a convention up by name ("3dgs" or "gsplat"), or passes a `Convention` through."""
    if isinstance(convention, Convention):
        return convention
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}; got {convention!r}")
    return CONVENTIONS[convention]
