"""Wild-GS triplane appearance: back-project a reference image with its rendered depth, splat the visible points onto
three axis-aligned planes and their reverses, run the triplane UNet, and sample local embeddings at Gaussian centres.

Plane conventions (shared by splatting and sampling, so they agree by construction). Inside the AABB a world point p
has normalised coordinates n = (p - lo) / (hi - lo) in [0, 1]^3. Plane k has in-plane axes (a, b) and depth axis d:
xy = (0, 1 | 2), yz = (1, 2 | 0), zx = (2, 0 | 1). Its arrays are [R, R, ...] indexed [i_a, i_b] with cell i =
floor(n * R) (clamped to R - 1); cell centres sit at (i + 0.5) / R, as torch's `grid_sample(align_corners=False)`.
The "forward" map of a plane keeps the points nearest to its low-depth side (n_d within `band` of the cell minimum),
the "reverse" map those nearest to the high side (within `band` of the cell maximum): a soft z-buffer that is a
scatter-average over the surface layer, with static shapes (`segment_min/max/sum` over R*R cells + one dump cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Mlp, sharding_scope

# (a, b, d) per plane: in-plane axes then the depth axis.
PLANE_AXES: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
PLANE_NAMES: tuple[str, ...] = ("xy", "yz", "zx")


def backproject_depth(depth_hw: jax.Array, K: jax.Array, viewmat: jax.Array) -> jax.Array:
    """World points [H * W, 3] of every pixel centre (+0.5, OpenCV axes) at view-space depth `depth_hw` [H, W].

    `K` [3, 3] intrinsics and `viewmat` [4, 4] world-to-camera, as `kernels.rasterize` takes them; the depth is the
    rasterizer's expected view-space z (`RasterOutput.depth`).
    """
    if depth_hw.ndim != 2 or K.shape != (3, 3) or viewmat.shape != (4, 4):
        raise ValueError(
            f"backproject_depth needs depth [H, W], K [3, 3], viewmat [4, 4]; got {tuple(depth_hw.shape)}, "
            f"{tuple(K.shape)}, {tuple(viewmat.shape)}"
        )
    height, width = depth_hw.shape
    v, u = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32) + 0.5, jnp.arange(width, dtype=jnp.float32) + 0.5, indexing="ij"
    )
    pixels = jnp.stack([u, v, jnp.ones_like(u)], axis=-1).reshape(-1, 3)
    rays = pixels @ jnp.linalg.inv(K.astype(jnp.float32)).T  # z = 1 in camera space
    camera = rays * depth_hw.reshape(-1, 1).astype(jnp.float32)
    rotation, translation = viewmat[:3, :3].astype(jnp.float32), viewmat[:3, 3].astype(jnp.float32)
    return (camera - translation) @ rotation  # R^T (x_cam - t), for row vectors


def normalise_points(points: jax.Array, aabb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(n [P, 3] = (p - lo) / (hi - lo), inside [P] bool) for `aabb` [2, 3] = (lo, hi)."""
    lo, hi = aabb[0], aabb[1]
    n = (points - lo) / jnp.maximum(hi - lo, 1e-12)
    inside = jnp.all((n >= 0.0) & (n <= 1.0), axis=-1)
    return n, inside


def plane_cells(n: jax.Array, resolution: int) -> jax.Array:
    """Flat cell index [3, P] (i_a * R + i_b) of normalised points on the xy, yz, zx planes."""
    cells = []
    for a, b, _ in PLANE_AXES:
        ia = jnp.clip(jnp.floor(n[:, a] * resolution), 0, resolution - 1).astype(jnp.int32)
        ib = jnp.clip(jnp.floor(n[:, b] * resolution), 0, resolution - 1).astype(jnp.int32)
        cells.append(ia * resolution + ib)
    return jnp.stack(cells)


def splat_planes(
    points: jax.Array, colors: jax.Array, valid: jax.Array, aabb: jax.Array, resolution: int, *, band: float
) -> tuple[jax.Array, jax.Array]:
    """Scatter-average coloured points onto the 6 colour maps (xy, xy reversed, yz, yz reversed, zx, zx reversed).

    Args:
      points [P, 3] world positions (treated as data: no gradient flows into them); colors [P, C]; valid [P] bool
      (visible pixel with a rendered depth); aabb [2, 3]; resolution R; band: z-buffer depth band in normalised
      units (a point joins a cell's forward map when its depth is within `band` of the cell's nearest point).
    Returns (maps [6, R, R, C] (0 where empty), coverage [6, R, R] in {0, 1}). Differentiable in `colors`.
    """
    n, inside = normalise_points(jax.lax.stop_gradient(points), aabb)
    keep = valid & inside
    num_cells = resolution * resolution
    cells = jnp.where(keep[None], plane_cells(n, resolution), num_cells)  # dropped points go to a dump cell
    maps, coverage = [], []
    for plane, (_, _, d) in enumerate(PLANE_AXES):
        depth = n[:, d]
        cell = cells[plane]
        nearest = jax.ops.segment_min(jnp.where(keep, depth, jnp.inf), cell, num_segments=num_cells + 1)
        farthest = jax.ops.segment_max(jnp.where(keep, depth, -jnp.inf), cell, num_segments=num_cells + 1)
        for layer in (depth <= nearest[cell] + band, depth >= farthest[cell] - band):
            weight = (keep & layer).astype(colors.dtype)
            total = jax.ops.segment_sum(colors * weight[:, None], cell, num_segments=num_cells + 1)[:num_cells]
            count = jax.ops.segment_sum(weight, cell, num_segments=num_cells + 1)[:num_cells]
            mean = total / jnp.maximum(count, 1.0)[:, None]
            maps.append(mean.reshape(resolution, resolution, -1))
            coverage.append((count > 0).astype(colors.dtype).reshape(resolution, resolution))
    return jnp.stack(maps), jnp.stack(coverage)


def sample_plane(plane: jax.Array, ua: jax.Array, ub: jax.Array) -> jax.Array:
    """Bilinear sample of plane [R, R, C] at normalised (ua, ub) [P] in [0, 1] (cell centres at (i + 0.5) / R,
    border clamped, as `grid_sample(align_corners=False, padding_mode="border")`) -> [P, C]."""
    resolution = plane.shape[0]
    xa = jnp.clip(ua * resolution - 0.5, 0.0, resolution - 1.0)
    xb = jnp.clip(ub * resolution - 0.5, 0.0, resolution - 1.0)
    a0, b0 = jnp.floor(xa).astype(jnp.int32), jnp.floor(xb).astype(jnp.int32)
    a1, b1 = jnp.minimum(a0 + 1, resolution - 1), jnp.minimum(b0 + 1, resolution - 1)
    wa, wb = (xa - a0)[:, None], (xb - b0)[:, None]
    top = plane[a0, b0] * (1 - wb) + plane[a0, b1] * wb
    bottom = plane[a1, b0] * (1 - wb) + plane[a1, b1] * wb
    return top * (1 - wa) + bottom * wa


def sample_triplane(planes: jax.Array, points: jax.Array, aabb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sum of the three feature planes [3, R, R, C] sampled at world points [P, 3] (EG3D's sum) -> ([P, C], inside)."""
    n, inside = normalise_points(points, aabb)
    total = sum(sample_plane(planes[k], n[:, a], n[:, b]) for k, (a, b, _) in enumerate(PLANE_AXES))
    return total, inside


def crop_aabb(means: jax.Array, ratio: float = 0.5) -> jax.Array:
    """The triplane AABB [2, 3]: the per-axis extent of the Gaussians between their 1% and 99% quantiles, scaled by
    `ratio` about their median. Wild-GS crops with ratio 0.5 so the planes spend their cells where the Gaussians are.
    (Our reading of the paper's crop ratio; the paper gives only the value.)"""
    lo, hi = jnp.quantile(means, 0.01, axis=0), jnp.quantile(means, 0.99, axis=0)
    centre = jnp.median(means, axis=0)
    half = 0.5 * ratio * (hi - lo)
    return jnp.stack([centre - half, centre + half])


class TriplaneUNet(nnx.Module):
    """Wild-GS `U_3D`: a small UNet from the stacked colour maps [R, R, C_in] to three feature planes [3, R, R, C].

    `widths` are the channels per level (each level: two conv3x3 + ReLU; 2x2 max-pool down, bilinear up + skip
    concatenation on the way back). R must divide by 2^(len(widths) - 1).
    """

    def __init__(
        self,
        in_channels: int,
        plane_channels: int,
        *,
        widths: Sequence[int] = (32, 64, 128),
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}

        def conv(i: int, o: int) -> nnx.Conv:
            return nnx.Conv(i, o, (3, 3), padding=((1, 1), (1, 1)), **kw)

        self.widths = tuple(int(w) for w in widths)
        self.plane_channels = int(plane_channels)
        down, ch = [], int(in_channels)
        for w in self.widths:
            down.append(nnx.List([conv(ch, w), conv(w, w)]))
            ch = w
        up = []
        for w in reversed(self.widths[:-1]):
            up.append(nnx.List([conv(ch + w, w), conv(w, w)]))
            ch = w
        self.down = nnx.List(down)
        self.up = nnx.List(up)
        self.head = nnx.Conv(ch, 3 * self.plane_channels, (1, 1), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [R, R, C_in] -> feature planes [3, R, R, plane_channels] (xy, yz, zx)."""
        levels = len(self.widths)
        resolution = x.shape[0]
        if resolution % (2 ** (levels - 1)):
            raise ValueError(f"triplane resolution {resolution} must divide by 2^{levels - 1} for {levels} UNet levels")
        y, skips = x[None], []
        for index, (c1, c2) in enumerate(self.down):
            if index:
                y = nnx.max_pool(y, (2, 2), strides=(2, 2))
            y = jax.nn.relu(c2(jax.nn.relu(c1(y))))
            skips.append(y)
        for (c1, c2), skip in zip(self.up, reversed(skips[:-1]), strict=True):
            y = jax.image.resize(y, (1, *skip.shape[1:3], y.shape[-1]), method="bilinear")
            y = jnp.concatenate([y, skip], axis=-1)
            y = jax.nn.relu(c2(jax.nn.relu(c1(y))))
        out = self.head(y)[0]
        return out.reshape(resolution, resolution, 3, self.plane_channels).transpose(2, 0, 1, 3)


class TriplaneOutput(NamedTuple):
    """`TriplaneEncoder` result: local_embedding [N, E] (the outside vector where not inside), inside [N] bool,
    colour_maps [6, R, R, C] with coverage [6, R, R], feature_planes [3, R, R, plane_channels]."""

    local_embedding: jax.Array
    inside: jax.Array
    colour_maps: jax.Array
    coverage: jax.Array
    feature_planes: jax.Array


class TriplaneEncoder(nnx.Module):
    """Reference image + rendered depth -> 6 colour maps -> `U_3D` -> 3 feature planes -> `M_L` at Gaussian centres.

    Args:
      resolution: plane resolution R (default 64).
      plane_channels: channels of each feature plane (default 32).
      unet_widths: `TriplaneUNet` widths (default (32, 64, 128)).
      embedding_dim: local embedding width (paper: 16).
      local_hidden: hidden width of `M_L` (default 64).
      zbuffer_band: z-buffer band in normalised AABB units (default 2 / R: two cells' worth of depth).
      use_coverage: feed each map's coverage (0 = no point landed) to the UNet beside its colour, so an empty cell
        is not mistaken for a black surface.
      zero_init_output: start `M_L`'s output layer at zero (default True), so the local embeddings are 0 when the
        triplane is switched on after the warm-up (the warm-up feeds `M_F` zeros there) and grow from 0 in the
        direction the loss asks for, instead of arriving as a random input that `M_F` first learns to suppress.
    """

    def __init__(
        self,
        *,
        resolution: int = 64,
        plane_channels: int = 32,
        unet_widths: Sequence[int] = (32, 64, 128),
        embedding_dim: int = 16,
        local_hidden: int = 64,
        zbuffer_band: float | None = None,
        use_coverage: bool = True,
        zero_init_output: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.resolution = int(resolution)
        self.band = 2.0 / self.resolution if zbuffer_band is None else float(zbuffer_band)
        self.use_coverage = bool(use_coverage)
        in_channels = 6 * (3 + int(self.use_coverage))
        self.unet = TriplaneUNet(in_channels, plane_channels, widths=unet_widths, **kw)
        with sharding_scope():  # Mlp kernels carry "model"-axis metadata; eager sharding only under such a mesh
            self.local_mlp = Mlp(
                int(plane_channels),
                int(local_hidden),
                int(embedding_dim),
                act="relu",
                fc1_init=nnx.initializers.lecun_normal(),
                fc2_init=nnx.initializers.zeros_init() if zero_init_output else None,
                **kw,
            )
        # Learnable embedding of Gaussians outside the AABB crop (paper's v).
        self.outside = nnx.Param(0.02 * jax.random.normal(rngs.params(), (int(embedding_dim),), param_dtype))

    def colour_maps(
        self,
        image_hw3: jax.Array,
        depth_hw: jax.Array,
        K: jax.Array,
        viewmat: jax.Array,
        visible_hw: jax.Array,
        aabb: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """The 6 colour maps [6, R, R, 3] and coverage [6, R, R] of the visible pixels (visible and depth > 0)."""
        points = backproject_depth(jax.lax.stop_gradient(depth_hw), K, viewmat)
        valid = visible_hw.reshape(-1) & (depth_hw.reshape(-1) > 0)
        return splat_planes(points, image_hw3.reshape(-1, 3), valid, aabb, self.resolution, band=self.band)

    def feature_planes(self, maps: jax.Array, coverage: jax.Array) -> jax.Array:
        """`U_3D` on the channel-stacked maps -> [3, R, R, plane_channels]."""
        stacked = [maps, coverage[..., None]] if self.use_coverage else [maps]
        x = jnp.concatenate(stacked, axis=-1)  # [6, R, R, 3 (+1)]
        x = x.transpose(1, 2, 0, 3).reshape(self.resolution, self.resolution, -1)
        return self.unet(x)

    def embed(self, planes: jax.Array, means: jax.Array, aabb: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Local embeddings [N, E] at Gaussian centres `means` [N, 3]: M_L(f_xy + f_yz + f_zx) inside the AABB,
        the outside vector elsewhere; also returns `inside` [N]."""
        summed, inside = sample_triplane(planes, means, aabb)
        local = self.local_mlp(summed)
        return jnp.where(inside[:, None], local, self.outside[...].astype(local.dtype)), inside

    def __call__(
        self,
        image_hw3: jax.Array,
        depth_hw: jax.Array,
        K: jax.Array,
        viewmat: jax.Array,
        visible_hw: jax.Array,
        means: jax.Array,
        aabb: jax.Array,
    ) -> TriplaneOutput:
        """The whole triplane branch for one reference image; see `TriplaneOutput`."""
        maps, coverage = self.colour_maps(image_hw3, depth_hw, K, viewmat, visible_hw, aabb)
        planes = self.feature_planes(maps, coverage)
        local, inside = self.embed(planes, means, aabb)
        return TriplaneOutput(local, inside, maps, coverage, planes)
