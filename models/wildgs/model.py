"""Wild-GS (Xu, Mei, Patel; NeurIPS 2024) as one NNX module: a `models.gs3d` Gaussian pool whose colours come from
the appearance of a reference image (eq. 3, sh_i = M_F(Emb_g + Emb_l_i + f_in_i)).

    model = zoo.create_model("wildgs", capacity=8192)
    model.load_pool(init_from_points(xyz, rgb, 8192, position_scale=extent), position_scale=extent)
    model.refresh_aabb()                                   # triplane crop around the active Gaussians
    ref = model.set_reference(image_hw3, viewmat, K)       # predicts the SH of that appearance and caches them
    out = model.render(viewmat2, K2, width, height)        # any camera, rendered with the cached SH (plain 3DGS cost)
    ref.mask                                               # [H, W] visibility mask of the reference (1 = static)

The pool is `GaussianSplats` with one extra per-Gaussian attribute, the intrinsic feature `features` [C, 32] (it
clones, splits and prunes with its Gaussian); `sh_dc` / `sh_rest` stay in the pool (the trainer freezes them) but
do not render: `sh_coefficients()` returns the cached reference SH `reference_sh` [C, 16, 3] (a `ReferenceCache`
variable, with gs3d's SH degree warm-up applied). The appearance nets are `self.appearance`, a
`models.wildgs.AppearanceModel` (parsing UNet, triplane, fusion MLP).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.gs3d import pool as pool_lib
from models.gs3d.model import GaussianSplats
from models.wildgs.appearance import AppearanceEmbeddings, AppearanceModel, AppearanceOutput
from zoo.registry import PretrainedCfg, register_model

FEATURES = "features"
REFERENCE_SH = "reference_sh"


class ReferenceCache(nnx.Variable):
    """The SH predicted for the current reference image (not trained, checkpointed with the model)."""


def active_aabb(means: jax.Array, active: jax.Array, ratio: float = 0.5) -> jax.Array:
    """`models.wildgs.crop_aabb` over the active Gaussians only: [2, 3] (lo, hi), the 1%-99% per-axis extent scaled by
    `ratio` about the median (a unit box about the origin when no Gaussian is active)."""
    masked = jnp.where(active[:, None], means, jnp.nan)
    lo, hi = jnp.nanquantile(masked, 0.01, axis=0), jnp.nanquantile(masked, 0.99, axis=0)
    centre = jnp.nanmedian(masked, axis=0)
    half = 0.5 * float(ratio) * (hi - lo)
    box = jnp.stack([centre - half, centre + half])
    default = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], jnp.float32)
    return jnp.where(jnp.any(active) & jnp.all(jnp.isfinite(box)), box, default)


class WildGS(GaussianSplats):
    """A gs3d pool with 32-d intrinsic features plus Wild-GS's appearance model; see the module docstring.

    Args:
      capacity, sh_degree, sh_degree_interval, convention, intersection_capacity, impl, tile_size, position_scale:
        as `models.gs3d.GaussianSplats` (the appearance model predicts SH of degree `sh_degree`).
      feature_dim: width of the per-Gaussian intrinsic feature f_in (paper: 32).
      appearance: keyword arguments of `AppearanceModel` (global_dim, local_dim, mask_threshold, fusion_widths,
        parsing={...}, triplane={...}); `feature_dim` and `sh_degree` come from here.
      aabb_ratio: the triplane crop ratio `refresh_aabb` uses by default (paper: 0.5).
    """

    def __init__(
        self,
        capacity: int = 4096,
        *,
        sh_degree: int = 3,
        sh_degree_interval: int = 1000,
        feature_dim: int = 32,
        appearance: Mapping[str, Any] | None = None,
        aabb_ratio: float = 0.5,
        convention: str = "3dgs",
        intersection_capacity: int | None = None,
        impl: str = "auto",
        tile_size: int = 16,
        position_scale: float = 1.0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(
            capacity, sh_degree=sh_degree, sh_degree_interval=sh_degree_interval,
            extra_attributes={FEATURES: (int(feature_dim),)}, convention=convention,
            intersection_capacity=intersection_capacity, impl=impl, tile_size=tile_size, position_scale=position_scale,
        )  # fmt: skip
        options = dict(appearance or {})
        clash = sorted({"feature_dim", "sh_degree"} & set(options))
        if clash:
            raise ValueError(
                f"appearance={{...}} must not set {clash}: they are WildGS arguments (feature_dim, sh_degree)"
            )
        self.aabb_ratio = float(aabb_ratio)
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.appearance = AppearanceModel(
            feature_dim=int(feature_dim), sh_degree=self.max_sh_degree, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs, **options,
        )  # fmt: skip
        num = pool_lib.num_sh_coefficients(self.max_sh_degree)
        self.reference_sh = ReferenceCache(jnp.zeros((self.capacity, num, 3), jnp.float32))

    # ---- pool bookkeeping --------------------------------------------------------------------------------------------
    @property
    def slot_variable_names(self) -> tuple[str, ...]:
        """gs3d's per-slot variables plus the SH cache (so `grow` pads it)."""
        return (*super().slot_variable_names, REFERENCE_SH)

    def refresh_aabb(self, ratio: float | None = None) -> jax.Array:
        """Set the triplane AABB to the crop of the active Gaussians (`active_aabb`, default ratio `aabb_ratio`) and
        return it. Call after loading or densifying the pool."""
        box = active_aabb(self.means(), self.active.value, self.aabb_ratio if ratio is None else ratio)
        self.appearance.set_aabb(box)
        return box

    # ---- appearance ------------------------------------------------------------------------------------------------
    def reference_depth(self, viewmat: jax.Array, K: jax.Array, width: int, height: int) -> jax.Array:
        """The rendered expected depth [H, W] of a reference camera (what the triplane back-projects), without
        gradient. Depth does not depend on colour, so the cached SH are as good as any."""
        return jax.lax.stop_gradient(self.render(viewmat, K, width, height).depth[0])

    def embed(
        self,
        image_hw3: jax.Array,
        viewmat: jax.Array,
        K: jax.Array,
        *,
        depth: jax.Array | None = None,
        use_triplane: bool | jax.Array = True,
    ) -> AppearanceEmbeddings:
        """Appearance embeddings of a reference image [H, W, 3] in [0, 1] seen by camera (viewmat, K).

        `depth` [H, W]: the depth to back-project (default: this model's rendered depth of that camera).
        `use_triplane` False (a Python bool) skips the triplane branch (zero local embeddings, the paper's warm-up);
        a traced bool keeps one program for both phases and zeroes the local embeddings where it is False.
        """
        height, width = image_hw3.shape[:2]
        if isinstance(use_triplane, bool) and not use_triplane:
            return self.appearance.embed(image_hw3, viewmat, K, jnp.zeros((height, width)), self.means(),
                                         use_triplane=False)  # fmt: skip
        if depth is None:
            depth = self.reference_depth(viewmat, K, width, height)
        emb = self.appearance.embed(image_hw3, viewmat, K, jax.lax.stop_gradient(depth), self.means())
        if not isinstance(use_triplane, bool):
            gate = jnp.asarray(use_triplane)
            emb = emb._replace(local_embedding=jnp.where(gate, emb.local_embedding, 0.0), inside=emb.inside & gate)
        return emb

    def shade(self, embeddings: AppearanceEmbeddings) -> tuple[jax.Array, jax.Array]:
        """(sh_dc [C, 1, 3], sh_rest [C, K - 1, 3]) of every slot for these embeddings (`M_F`)."""
        return self.appearance.shade(self.features.value, embeddings.global_embedding, embeddings.local_embedding)

    def set_reference_sh(self, sh_dc: jax.Array, sh_rest: jax.Array) -> None:
        """Cache these SH for the renders that follow."""
        self.reference_sh.value = jnp.concatenate([sh_dc, sh_rest], axis=1).astype(jnp.float32)

    def set_reference(
        self,
        image_hw3: jax.Array,
        viewmat: jax.Array,
        K: jax.Array,
        *,
        depth: jax.Array | None = None,
        use_triplane: bool | jax.Array = True,
    ) -> AppearanceOutput:
        """Predict the SH of this reference image's appearance, cache them (`render` uses them until the next call)
        and return the appearance output (mask, embeddings, SH). Arguments as `embed`."""
        emb = self.embed(image_hw3, viewmat, K, depth=depth, use_triplane=use_triplane)
        sh_dc, sh_rest = self.shade(emb)
        self.set_reference_sh(sh_dc, sh_rest)
        return AppearanceOutput(sh_dc, sh_rest, emb.mask, emb.global_embedding, emb.local_embedding, emb.inside)

    def set_interpolated_reference(self, a: AppearanceEmbeddings, b: AppearanceEmbeddings, t: float | jax.Array):
        """Cache the SH of the appearance (1 - t) a + t b between two references' embeddings (`embed`)."""
        self.set_reference_sh(*self.appearance.interpolate(self.features.value, a, b, t))

    def sh_coefficients(self) -> jax.Array:
        """The cached reference SH with the bands above the active degree zeroed (gs3d's warm-up)."""
        num = pool_lib.num_sh_coefficients(self.max_sh_degree)
        band = jnp.floor(jnp.sqrt(jnp.arange(num, dtype=jnp.float32))).astype(jnp.int32)
        keep = (band <= self.active_sh_degree()).astype(jnp.float32)
        return self.reference_sh.value * keep[None, :, None]


def _cfg() -> PretrainedCfg:
    return PretrainedCfg(
        input_size=(0, 0, 3), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_classes=0,
        url="https://github.com/XuJiacong/Wild-GS", license="(no weights: trained per scene)",
        paper="https://arxiv.org/abs/2406.10373",
        notes="Per-scene model: train it with configs/wildgs.py (task wildgs); no official code and no official "
              "weights. The parsing encoder can start from torchvision's ImageNet ResNet-18 (models/wildgs/README.md).",
    )  # fmt: skip


@register_model("wildgs", cfg=_cfg())
def wildgs(*, rngs: nnx.Rngs | None = None, **overrides: Any) -> WildGS:
    """Wild-GS: a gs3d pool with intrinsic features and the reference-image appearance model (`WildGS`); the pool
    starts empty."""
    return WildGS(rngs=rngs, **overrides)
