"""Wild-GS appearance model: per-Gaussian SH from a reference image (eq. 3, sh_i = M_F(Emb_g + Emb_l_i + f_in_i)).

    model = AppearanceModel(rngs=nnx.Rngs(0))
    model.set_aabb(crop_aabb(means))                       # triplane crop (models.wildgs.triplane.crop_aabb)
    out = model(image_hw3, viewmat, K, depth_hw, means, features)   # depth: rasterized expected depth of that view
    rasterize(means, quats, scales, opacities, jnp.concatenate([out.sh_dc, out.sh_rest], 1), ..., sh_degree=3)

`out.sh_dc` [N, 1, 3] and `out.sh_rest` [N, K - 1, 3] replace a 3DGS pool's SH for renders with that reference's
appearance; cache them per reference image, so rendering costs what plain 3DGS does. `embed` + `shade` split the
two halves, so two references' embeddings can be interpolated (`interpolate`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Buffer
from models.wildgs.parsing import ParsingUNet
from models.wildgs.triplane import TriplaneEncoder


class FusionMLP(nnx.Module):
    """`M_F`: concat(intrinsic feature, global embedding, local embedding) -> SH coefficients [N, (deg + 1)^2, 3].

    ReLU hidden layers of `hidden_widths`; the output layer starts small (std 0.1 / sqrt(fan_in)) so the first renders
    are near SH 0, i.e. grey, instead of saturated noise.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        sh_degree: int = 3,
        hidden_widths: Sequence[int] = (128, 128),
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        if not 0 <= int(sh_degree) <= 3:
            raise ValueError(f"sh_degree must be in 0..3 (what kernels.rasterize evaluates); got {sh_degree}")
        self.num_coefficients = (int(sh_degree) + 1) ** 2
        widths = [int(in_dim), *(int(w) for w in hidden_widths)]
        self.hidden = nnx.List([nnx.Linear(i, o, **kw) for i, o in itertools.pairwise(widths)])
        small = nnx.initializers.variance_scaling(0.01, "fan_in", "normal")
        self.out = nnx.Linear(widths[-1], 3 * self.num_coefficients, kernel_init=small, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [N, in_dim] -> SH [N, (deg + 1)^2, 3] (coefficient-major, as `kernels.rasterize` takes them)."""
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x).reshape(x.shape[0], self.num_coefficients, 3)


class AppearanceEmbeddings(NamedTuple):
    """What a reference image contributes: global_embedding [E_g], local_embedding [N, E_l], mask [H, W] (the
    visibility mask of that image, 1 = static), inside [N] bool (Gaussian centre inside the triplane AABB)."""

    global_embedding: jax.Array
    local_embedding: jax.Array
    mask: jax.Array
    inside: jax.Array


class AppearanceOutput(NamedTuple):
    """`AppearanceModel` result: sh_dc [N, 1, 3], sh_rest [N, K - 1, 3], and the `AppearanceEmbeddings` fields."""

    sh_dc: jax.Array
    sh_rest: jax.Array
    mask: jax.Array
    global_embedding: jax.Array
    local_embedding: jax.Array
    inside: jax.Array


class AppearanceModel(nnx.Module):
    """Parsing UNet (mask + global embedding) + triplane (local embeddings) + fusion MLP -> per-Gaussian SH.

    Args:
      feature_dim: per-Gaussian intrinsic feature width (paper: 32; the features live in the Gaussian pool, e.g.
        `GaussianSplats(extra_attributes={"features": (32,)})`, so they clone / split / prune with their Gaussian).
      global_dim, local_dim: embedding widths (paper: 16 and 16).
      sh_degree: degree of the predicted SH (default 3, what 3DGS renders).
      mask_threshold: Th, the mask value above which a pixel is back-projected into the triplane (default 0.5).
      fusion_widths: hidden widths of `M_F`.
      parsing, triplane: keyword arguments of `ParsingUNet` / `TriplaneEncoder` (widths, resolution, ...).
      aabb: initial triplane AABB [2, 3] (lo, hi); `set_aabb` replaces it (a `Buffer`, checkpointed, not trained).
    """

    def __init__(
        self,
        *,
        feature_dim: int = 32,
        global_dim: int = 16,
        local_dim: int = 16,
        sh_degree: int = 3,
        mask_threshold: float = 0.5,
        fusion_widths: Sequence[int] = (128, 128),
        parsing: dict[str, Any] | None = None,
        triplane: dict[str, Any] | None = None,
        aabb: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.feature_dim = int(feature_dim)
        self.sh_degree = int(sh_degree)
        self.mask_threshold = float(mask_threshold)
        self.parsing = ParsingUNet(embedding_dim=global_dim, **dict(parsing or {}), **kw)
        self.triplane = TriplaneEncoder(embedding_dim=local_dim, **dict(triplane or {}), **kw)
        self.fusion = FusionMLP(
            self.feature_dim + int(global_dim) + int(local_dim), sh_degree=sh_degree, hidden_widths=fusion_widths, **kw
        )
        default = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], jnp.float32)
        self.aabb = Buffer(default if aabb is None else jnp.asarray(aabb, jnp.float32).reshape(2, 3))

    def set_aabb(self, aabb: jax.Array) -> None:
        """Replace the triplane AABB [2, 3] (lo, hi), e.g. `crop_aabb(means)` after densification."""
        aabb = jnp.asarray(aabb, jnp.float32)
        if aabb.shape != (2, 3):
            raise ValueError(f"aabb must be [2, 3] (lo, hi); got shape {tuple(aabb.shape)}")
        self.aabb[...] = aabb

    def embed(
        self,
        image_hw3: jax.Array,
        viewmat: jax.Array,
        K: jax.Array,
        depth_hw: jax.Array,
        means: jax.Array,
        *,
        use_triplane: bool = True,
    ) -> AppearanceEmbeddings:
        """Embeddings of one reference image [H, W, 3] in [0, 1] with its camera and rendered depth [H, W].

        `use_triplane=False` (the warm-up, when the mask is not yet reliable) gives zero local embeddings.
        """
        if image_hw3.ndim != 3 or image_hw3.shape[-1] != 3:
            raise ValueError(f"reference image must be [H, W, 3]; got shape {tuple(image_hw3.shape)}")
        if depth_hw.shape != image_hw3.shape[:2]:
            raise ValueError(f"depth {tuple(depth_hw.shape)} must match the image size {tuple(image_hw3.shape[:2])}")
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"means must be [N, 3]; got shape {tuple(means.shape)}")
        parsed = self.parsing(image_hw3[None])
        mask = parsed.mask[0]
        global_embedding = parsed.global_embedding[0]
        if not use_triplane:
            local = jnp.zeros((means.shape[0], self.triplane.outside.shape[0]), global_embedding.dtype)
            return AppearanceEmbeddings(global_embedding, local, mask, jnp.zeros(means.shape[0], bool))
        # The threshold is a hard selection, so no gradient reaches the mask through the triplane (as in the paper).
        visible = jax.lax.stop_gradient(mask) > self.mask_threshold
        out = self.triplane(image_hw3, depth_hw, K, viewmat, visible, means, self.aabb[...])
        return AppearanceEmbeddings(global_embedding, out.local_embedding, mask, out.inside)

    def shade(
        self, features: jax.Array, global_embedding: jax.Array, local_embedding: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """`M_F` on (features [N, F], global [E_g] (broadcast) or [N, E_g], local [N, E_l]) -> (sh_dc, sh_rest)."""
        if features.ndim != 2 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"intrinsic features must be [N, {self.feature_dim}]; got {tuple(features.shape)}")
        n = features.shape[0]
        global_embedding = jnp.broadcast_to(global_embedding, (n, global_embedding.shape[-1]))
        sh = self.fusion(jnp.concatenate([features, global_embedding, local_embedding], axis=-1))
        return sh[:, :1], sh[:, 1:]

    def __call__(
        self,
        image_hw3: jax.Array,
        viewmat: jax.Array,
        K: jax.Array,
        depth_hw: jax.Array,
        means: jax.Array,
        features: jax.Array,
        *,
        use_triplane: bool = True,
    ) -> AppearanceOutput:
        """Per-Gaussian SH for the appearance of one reference image; see `AppearanceOutput`."""
        emb = self.embed(image_hw3, viewmat, K, depth_hw, means, use_triplane=use_triplane)
        sh_dc, sh_rest = self.shade(features, emb.global_embedding, emb.local_embedding)
        return AppearanceOutput(sh_dc, sh_rest, emb.mask, emb.global_embedding, emb.local_embedding, emb.inside)

    def interpolate(
        self, features: jax.Array, a: AppearanceEmbeddings, b: AppearanceEmbeddings, t: float | jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """SH for the appearance (1 - t) * a + t * b of two references' embeddings (global and local); t = 0 is a's
        appearance, t = 1 is b's. Returns (sh_dc, sh_rest)."""
        t = jnp.asarray(t, jnp.float32)
        global_embedding = (1 - t) * a.global_embedding + t * b.global_embedding
        local_embedding = (1 - t) * a.local_embedding + t * b.local_embedding
        return self.shade(features, global_embedding, local_embedding)
