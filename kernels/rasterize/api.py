"""`rasterize`: project, shade, bin and composite 3-D Gaussians for a batch of cameras, behind one dispatcher."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from kernels.rasterize.binning import bin_gaussians
from kernels.rasterize.composite import composite
from kernels.rasterize.config import CompositeConfig
from kernels.rasterize.conventions import Convention, get_convention
from kernels.rasterize.projection import project_gaussians
from kernels.rasterize.sh import eval_sh


class RasterOutput(NamedTuple):
    """Result of `rasterize` for B cameras.

    image [B, H, W, D] blended features/colours over the background; alpha [B, H, W]; depth [B, H, W] expected
    depth (sum w z / alpha, 0 where alpha is 0); means2d [B, N, 2] screen-space means (pixels); radii [B, N, 2]
    int32 (0 = culled); depths [B, N] view-space z; n_intersections [B] int32 true (Gaussian, tile) pair count;
    overflow [B] bool, True where n_intersections exceeded `capacity` and pairs were dropped (see `check_overflow`).
    """

    image: jax.Array
    alpha: jax.Array
    depth: jax.Array
    means2d: jax.Array
    radii: jax.Array
    depths: jax.Array
    n_intersections: jax.Array
    overflow: jax.Array


class IntersectionOverflowError(RuntimeError):
    """Raised by `check_overflow` when a render dropped (Gaussian, tile) intersections."""


def check_overflow(output: RasterOutput, capacity: int | None = None) -> None:
    """Raises `IntersectionOverflowError` (outside jit) if any camera overflowed its intersection capacity.

    The message names the capacity to pass next time. Inside jit, read `output.overflow` instead (or use
    `jax.debug.callback`), since raising needs concrete values.
    """
    overflow = jax.device_get(output.overflow)
    if bool(jnp.any(overflow)):
        needed = int(jnp.max(jax.device_get(output.n_intersections)))
        have = f"capacity={capacity}" if capacity is not None else "the intersection capacity"
        raise IntersectionOverflowError(
            f"{needed} (Gaussian, tile) intersections exceed {have}; intersections were dropped. "
            f"Call rasterize(..., capacity={suggest_capacity(needed)}) or larger."
        )


def suggest_capacity(n_intersections: int, headroom: float = 1.25) -> int:
    """A capacity with headroom over an observed intersection count, rounded up to a multiple of 1024."""
    return int(-(-int(n_intersections * headroom) // 1024) * 1024)


def default_impl() -> str:
    """ "pallas" on GPU/TPU, "xla" on CPU."""
    return "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"


def rasterize(
    means: jax.Array,
    quats: jax.Array,
    scales: jax.Array,
    opacities: jax.Array,
    colors: jax.Array,
    viewmats: jax.Array,
    Ks: jax.Array,
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    background: jax.Array | None = None,
    convention: str | Convention = "3dgs",
    capacity: int | None = None,
    tile_size: int = 16,
    chunk: int = 32,
    near_plane: float | None = None,
    far_plane: float = 1e10,
    means2d_offset: jax.Array | None = None,
    impl: str = "auto",
    interpret: bool | None = None,
    deterministic: bool | None = None,
    pallas_backend: str | None = None,
) -> RasterOutput:
    """Differentiable 3-D Gaussian splatting (EWA projection, tile binning, front-to-back alpha compositing).

    Args:
      means [N, 3], quats [N, 4] (w, x, y, z, any norm), scales [N, 3] (linear), opacities [N] in [0, 1].
      colors: SH coefficients [N, K, D] when `sh_degree` is given (K >= (sh_degree + 1)^2; colour = SH + 0.5 clamped
        at 0, as graphdeco and gsplat do), else features [N, D] blended as they are (any D: RGB, N-D features).
      viewmats [B, 4, 4] world-to-camera (OpenCV axes) or [4, 4]; Ks [B, 3, 3] or [3, 3], pixel centres at +0.5.
      background: [D] (default zeros).
      convention: "3dgs" (graphdeco constants) or "gsplat" (gsplat 1.5.3); see `conventions.py`.
      capacity: static number of (Gaussian, tile) intersection slots per camera (default 16 N, at least 4096).
        Excess pairs are dropped and reported in `overflow` / `n_intersections`; call `check_overflow`.
      means2d_offset: optional zeros [B, N, 2] added to the projected means; `jax.grad` with respect to it is the
        screen-space mean gradient used for densification (in pixels).
      impl: "auto" (Pallas on GPU/TPU, XLA on CPU), "xla" or "pallas". interpret: Pallas interpret mode (default: on
        CPU). deterministic: reduce per-slot gradients with a segmented scan (default on GPU/TPU) instead of a
        scatter-add (deterministic on CPU only). pallas_backend: "triton" or "mosaic_tpu" to lower the Pallas kernels
        for a platform other than the default one (ahead-of-time export); None picks it from the default backend.
        With `interpret=True`, "mosaic_tpu" interprets the TPU kernels (their own layout) instead of the Triton ones.
    """
    if impl not in ("auto", "xla", "pallas"):
        raise ValueError(f"impl must be 'auto', 'xla' or 'pallas'; got {impl!r}")
    impl = default_impl() if impl == "auto" else impl
    on_cpu = jax.default_backend() == "cpu"
    interpret = on_cpu if interpret is None else interpret
    deterministic = (not on_cpu) if deterministic is None else deterministic
    conv = get_convention(convention)
    single = viewmats.ndim == 2
    if single:
        viewmats, Ks = viewmats[None], Ks[None]
        if means2d_offset is not None and means2d_offset.ndim == 2:
            means2d_offset = means2d_offset[None]
    n = means.shape[0]
    num_channels = colors.shape[-1]
    if background is None:
        background = jnp.zeros((num_channels,), means.dtype)
    capacity = max(16 * n, 4096) if capacity is None else int(capacity)
    cfg = CompositeConfig.from_convention(
        conv,
        width,
        height,
        tile_size=tile_size,
        chunk=chunk,
        impl=impl,
        interpret=bool(interpret),
        reduction="sorted" if deterministic else "scatter",
        pallas_backend=pallas_backend,
    )
    # Compositing runs in float32, or float64 when the means are float64 (finite-difference tests under x64).
    dtype = jnp.float64 if means.dtype == jnp.float64 else jnp.float32
    if means2d_offset is None:
        means2d_offset = jnp.zeros((viewmats.shape[0], n, 2), dtype)

    def one_camera(viewmat, K, offset):
        proj = project_gaussians(
            means, quats, scales, viewmat, K, width, height, conv,
            tile_size=tile_size, near_plane=near_plane, far_plane=far_plane,
        )  # fmt: skip
        means2d = proj.means2d + offset
        if sh_degree is not None:
            campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
            feats = jnp.maximum(eval_sh(sh_degree, means - campos, colors) + 0.5, 0.0)
        else:
            feats = colors
        bins = bin_gaussians(
            means2d, proj.radii, proj.depths, width, height, conv, capacity=capacity, tile_size=tile_size, chunk=chunk
        )
        visible = jnp.all(proj.radii > 0, axis=-1)[:, None]
        packed = jnp.concatenate(
            [means2d, proj.conics, opacities[:, None], feats, proj.depths[:, None]], axis=1
        ).astype(dtype)
        # Culled Gaussians never reach a tile; zero their rows so no stray value (e.g. behind-camera) leaks anywhere.
        packed = jnp.where(visible, packed, 0.0)
        bg = jnp.concatenate([background.astype(dtype), jnp.zeros((1,), dtype)])
        values, alpha = composite(packed, bg, bins, cfg)
        image, depth_sum = values[..., :num_channels], values[..., num_channels]
        depth = jnp.where(alpha > 0, depth_sum / jnp.where(alpha > 0, alpha, 1.0), 0.0)
        return RasterOutput(
            image=image,
            alpha=alpha,
            depth=depth,
            means2d=means2d,
            radii=proj.radii,
            depths=proj.depths,
            n_intersections=bins.n_intersections,
            overflow=bins.overflow,
        )

    return jax.vmap(one_camera)(viewmats, Ks, means2d_offset)
