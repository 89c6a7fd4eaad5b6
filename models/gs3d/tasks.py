"""Plain 3DGS training through the shared trainer (task "gs3d"): graphdeco's recipe on a COLMAP scene.

One random training view per step (the pipeline's per-epoch shuffle, graphdeco's camera stack), loss
(1 - lambda) L1 + lambda D-SSIM, per-attribute learning rates from `optimizer.groups` (positions in scene-extent
units, so their lr is graphdeco's `1.6e-4 * extent`), SH degree warm-up in the model, and densification as task
hooks on static shapes:
- `process_gradients` (inside the jitted step) adds the view's screen-space gradient norm (NDC units) and
  visibility to the pool statistics while `iteration < densify_until`;
- `on_step_end` runs `densify_and_prune` every `densify_every` steps in (densify_from, densify_until) (with the
  screen / world size pruning once past the first opacity reset) and the opacity reset every
  `opacity_reset_every` steps, through `trainer.update_state`: same shapes, no recompilation, Adam moments of new,
  split and pruned slots (and of every opacity at a reset) zeroed. When a densification needs more slots than the
  pool has, the pool doubles first (`trainer.reshape_state`: one recompile).

Views of one scene may differ in size: each is zero-padded to the largest one (the canvas, one static shape) with a
`valid` mask that restricts the loss and the metrics to its own pixels. Eval: PSNR / SSIM / L1 on the held-out views
(`data.eval`; with an empty eval name, the train scene's "test" split).

Config (`config.gaussians`): capacity (initial slots; 0: twice the SfM points rounded up to a power of two),
intersection_capacity (0: the rasterizer's default), sh_degree, sh_degree_interval, initial_opacity, lambda_dssim,
background, densify_from, densify_until, densify_every, opacity_reset_every, grad_threshold, percent_dense,
min_opacity, max_screen_size, max_world_scale (x extent), impl (rasterizer: auto | xla | pallas).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from models.gs3d import losses
from models.gs3d import pool as pool_lib
from models.gs3d.model import SCREEN_OFFSET, GaussianSplats
from zoo.tasks import register_task
from zoo.tasks.base import Task

log = logging.getLogger("zoo.train")

GAUSSIAN_KEYS = (
    "capacity", "intersection_capacity", "sh_degree", "sh_degree_interval", "initial_opacity", "lambda_dssim",
    "background", "densify_from", "densify_until", "densify_every", "opacity_reset_every", "grad_threshold",
    "percent_dense", "min_opacity", "max_screen_size", "max_world_scale", "impl",
)  # fmt: skip


def default_gaussians_config() -> ml_collections.ConfigDict:
    """graphdeco's defaults (arguments/__init__.py) for `config.gaussians`."""
    return ml_collections.ConfigDict(
        {
            "capacity": 0,
            "intersection_capacity": 0,
            "sh_degree": 3,
            "sh_degree_interval": 1000,
            "initial_opacity": 0.1,
            "lambda_dssim": 0.2,
            "background": (0.0, 0.0, 0.0),
            "densify_from": 500,
            "densify_until": 15000,
            "densify_every": 100,
            "opacity_reset_every": 3000,
            "grad_threshold": 2e-4,
            "percent_dense": 0.01,
            "min_opacity": 0.005,
            "max_screen_size": 20.0,
            "max_world_scale": 0.1,
            "impl": "auto",
        }
    )


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


def view_transform(canvas_width: int, canvas_height: int):
    """`ColmapSource` example -> {"image" f32 [Hc, Wc, 3] in [0, 1] zero-padded, "valid" f32 [Hc, Wc], "viewmat"
    [4, 4] world-to-camera, "K" [3, 3], "size" f32 [2] (width, height)}."""

    def transform(example, rng=None):
        del rng
        image = np.asarray(example["image"], np.float32) / 255.0
        height, width = image.shape[:2]
        if width > canvas_width or height > canvas_height:
            raise ValueError(f"view of {width}x{height} does not fit the {canvas_width}x{canvas_height} canvas")
        canvas = np.zeros((canvas_height, canvas_width, 3), np.float32)
        canvas[:height, :width] = image
        valid = np.zeros((canvas_height, canvas_width), np.float32)
        valid[:height, :width] = 1.0
        viewmat = np.eye(4, dtype=np.float32)
        viewmat[:3, :3] = example["R"]
        viewmat[:3, 3] = example["t"]
        return {
            "image": canvas,
            "valid": valid,
            "viewmat": viewmat,
            "K": np.asarray(example["K"], np.float32),
            "size": np.array([width, height], np.float32),
        }

    return transform


@register_task("gs3d")
class GaussianSplattingTask(Task):
    """graphdeco 3DGS on a COLMAP scene source (`data.train` = "colmap:<scene>"); see the module docstring."""

    config_keys: ClassVar[dict[str, Any]] = {"gaussians": dict.fromkeys(GAUSSIAN_KEYS)}

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        if int(config.batch_size) != 1:
            raise ValueError(
                f"task gs3d renders one view per step (graphdeco): batch_size must be 1, got {config.batch_size}"
            )
        if int(config.data.get("eval_batch_size", 0) or 1) != 1:
            raise ValueError("task gs3d evaluates one view at a time: data.eval_batch_size must be 1 (or 0)")
        if float(config.get("ema_decay", 0.0)):
            raise ValueError("task gs3d does not support ema_decay: densification rewrites the pool between steps")
        defaults = default_gaussians_config()
        given = config.get("gaussians", None) or {}
        given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given)
        self.gs = ml_collections.ConfigDict({**defaults.to_dict(), **given})
        self.train_source = self.data_source("train")
        if not hasattr(self.train_source, "scene"):
            raise ValueError(
                f"task gs3d trains on a COLMAP scene source ('colmap:<scene dir>'), got "
                f"{type(self.train_source).__name__} for data.train.name={config.data.train.name!r}"
            )
        self.scene = self.train_source.scene
        self.eval_source = self._eval_source()
        views = list(self.train_source.views) + (list(self.eval_source.views) if self.eval_source else [])
        self.canvas = (max(v.width for v in views), max(v.height for v in views))
        _, self.extent = self.scene.normalization("train")
        points = self.scene.points_xyz
        capacity = int(self.gs.capacity) or max(_next_pow2(2 * len(points)), 256)
        self.capacity = capacity
        self._initial_pool = pool_lib.init_from_points(
            points, self.scene.points_rgb, capacity, sh_degree=int(self.gs.sh_degree),
            position_scale=self.extent, initial_opacity=float(self.gs.initial_opacity),
        )  # fmt: skip
        self.background = np.asarray(self.gs.background, np.float32).reshape(3)
        self.densify_log: list[dict[str, Any]] = []
        self._key = jax.random.key(int(config.seed) + 17)
        # Hook functions are created once: the trainer caches their jitted versions by identity.
        self._densify_fn = _make_densify_fn()
        self._demand_fn = _demand
        self._reset_fn = _reset_opacity

    def _eval_source(self):
        data = self.config.data
        spec = data.get("eval", None)
        if not spec:
            return None
        name = spec.get("name", "") or ""
        if not name or name == data.train.name:
            from zoo.data.colmap import ColmapSource

            return ColmapSource(self.scene, split=spec.get("split", "test") or "test")
        return self.data_source("eval")

    # ---- model ---------------------------------------------------------------------------------------------------
    def model_name(self) -> str:
        return super().model_name() or "gs3d"

    def model_overrides(self) -> dict[str, Any]:
        """The config's overrides plus the pool settings (current capacity: a reload builds the right shapes)."""
        overrides = super().model_overrides()
        overrides.update(
            capacity=int(self.capacity),
            sh_degree=int(self.gs.sh_degree),
            sh_degree_interval=int(self.gs.sh_degree_interval),
            intersection_capacity=int(self.gs.intersection_capacity) or None,
            impl=str(self.gs.impl),
        )
        return overrides

    def build_model(self, rngs: nnx.Rngs) -> GaussianSplats:
        """The registered model, initialised from the scene's SfM points (graphdeco `create_from_pcd`)."""
        model = super().build_model(rngs)
        if model.capacity != self.capacity:
            raise ValueError(f"model capacity {model.capacity} != the task's pool capacity {self.capacity}")
        model.load_pool(self._initial_pool, position_scale=self.extent)
        return model

    # ---- data ----------------------------------------------------------------------------------------------------
    batch_keys: tuple[str, ...] = ("image", "valid", "viewmat", "K", "size")  # what an eval batch carries

    def view_transform(self, train: bool):
        """The per-view transform onto the task's canvas (a subclass adds per-pixel maps)."""
        return view_transform(*self.canvas)

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        pipeline = self.train_pipeline(
            self.view_transform(True), seed=seed, process_index=process_index, process_count=process_count,
            source=self.train_source,
        )  # fmt: skip
        return iter(pipeline)

    def eval_batches(self, *, process_index: int, process_count: int):
        if self.eval_source is None:
            return ()
        from zoo import data as data_lib

        pipeline = data_lib.make_pipeline(
            self.eval_source, batch_size=1, train=False, transform=self.view_transform(False),
            process_index=process_index, process_count=process_count,
        )  # fmt: skip
        keys = self.batch_keys
        return ({**{k: b[k] for k in keys}, "mask": b[data_lib.MASK_KEY].astype(np.float32)} for b in pipeline)

    # ---- computation ---------------------------------------------------------------------------------------------
    def render(self, model: GaussianSplats, batch, *, record_radii: bool = False):
        """Render the first view of a batch on the canvas."""
        width, height = self.canvas
        return model.render(
            batch["viewmat"][0], batch["K"][0], width, height, background=jnp.asarray(self.background),
            record_radii=record_radii,
        )  # fmt: skip

    def loss(self, model, batch):
        out = self.render(model, batch, record_radii=True)
        loss, terms = losses.photometric_loss(
            out.image[0], batch["image"][0], batch["valid"][0], float(self.gs.lambda_dssim)
        )
        terms.update(
            num_gaussians=model.num_active().astype(jnp.float32),
            intersections=out.n_intersections[0].astype(jnp.float32),
            overflow=out.overflow[0].astype(jnp.float32),
        )
        return loss, terms

    def process_gradients(self, model, grads, batch):
        """Accumulate graphdeco's densification statistics from the screen-probe gradient (then zero it)."""
        probe = grads[SCREEN_OFFSET]
        screen_grad = probe.get_value() if isinstance(probe, nnx.Variable) else probe
        iteration = model.iteration.value + 1  # graphdeco's 1-based iteration of this step
        size = batch["size"][0]
        model.accumulate_stats(screen_grad, size[0], size[1], enabled=iteration < int(self.gs.densify_until))
        model.iteration.value = model.iteration.value + 1
        zero = jnp.zeros_like(screen_grad)
        if isinstance(probe, nnx.Variable):
            grads[SCREEN_OFFSET] = probe.replace(zero)
        else:
            grads[SCREEN_OFFSET] = zero
        return grads

    def eval_sums(self, model, batch):
        out = self.render(model, batch)
        image, target, valid = jnp.clip(out.image[0], 0.0, 1.0), batch["image"][0], batch["valid"][0]
        mask = batch["mask"][0]
        return {
            "psnr": losses.psnr(image, target, valid) * mask,
            "ssim": losses.ssim(image, target, valid) * mask,
            "l1": losses.l1(image, target, valid) * mask,
            "count": mask,
        }

    # ---- hooks ----------------------------------------------------------------------------------------------------
    def thresholds(self, step: int) -> pool_lib.DensifyThresholds:
        """graphdeco's thresholds at `step`: size pruning (20 px, 0.1 extent) only once past the first reset."""
        gs, extent = self.gs, self.extent
        late = step > int(gs.opacity_reset_every)
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # arrays: a new threshold value never recompiles
        return pool_lib.DensifyThresholds(
            grad=f32(gs.grad_threshold),
            clone_max_scale=f32(float(gs.percent_dense) * extent),
            min_opacity=f32(gs.min_opacity),
            max_screen_size=f32(float(gs.max_screen_size) if late else math.inf),
            max_world_scale=f32(float(gs.max_world_scale) * extent if late else math.inf),
        )

    def on_step_end(self, trainer: Any, step: int) -> None:
        """graphdeco's schedule: densify every `densify_every` steps in (from, until), reset opacity every
        `opacity_reset_every` steps (and at `densify_from` with a white background), both before `until`."""
        gs = self.gs
        if step >= int(gs.densify_until):
            return
        if step > int(gs.densify_from) and step % int(gs.densify_every) == 0:
            thresholds = self.thresholds(step)
            needed = int(trainer.update_state(self._demand_fn, thresholds.grad))
            if needed > self.capacity:
                new_capacity = self.capacity
                while new_capacity < needed:
                    new_capacity *= 2
                log.info("step %d: growing the Gaussian pool from %d to %d slots", step, self.capacity, new_capacity)
                trainer.reshape_state(_make_grow_fn(new_capacity))
                self.capacity = new_capacity
            key = jax.random.fold_in(self._key, step)
            counts = jax.device_get(trainer.update_state(self._densify_fn, key, thresholds))
            entry = {"step": step, "capacity": self.capacity, **{k: int(v) for k, v in counts.items()}}
            self.densify_log.append(entry)
            log.info("step %d densify %s", step, entry)
        white = bool(np.all(self.background == 1.0))
        if step % int(gs.opacity_reset_every) == 0 or (white and step == int(gs.densify_from)):
            trainer.update_state(self._reset_fn)
            self.densify_log.append({"step": step, "opacity_reset": True})


# ---- state functions (model, optimizer, *args) run by the trainer between steps ----------------------------------------
def _optimizer_state(optimizer: nnx.Optimizer) -> nnx.State:
    return nnx.state(optimizer, nnx.optimizer.OptState)


def remap_optimizer(
    model: GaussianSplats, optimizer: nnx.Optimizer, remap: pool_lib.SlotRemap, names: tuple[str, ...] | None = None
) -> None:
    """Move / zero the per-Gaussian optimizer moments (Adam mu, nu) of the pool attributes (`names`, default all)
    like the slots they belong to."""
    names = model.attribute_names + (SCREEN_OFFSET,) if names is None else names
    state = _optimizer_state(optimizer)
    nnx.update(optimizer, pool_lib.remap_slot_state(state, remap, model.capacity, names))


def _demand(model: GaussianSplats, optimizer: nnx.Optimizer, grad_threshold) -> jax.Array:
    del optimizer
    return pool_lib.densify_demand(model.pool(), model.stats(), grad_threshold)


def _make_densify_fn():
    def densify(model: GaussianSplats, optimizer: nnx.Optimizer, key, thresholds) -> dict[str, jax.Array]:
        """Clone / split / prune in place, zero the statistics, remap the optimizer moments."""
        new_pool, remap, counts = pool_lib.densify_and_prune(
            model.pool(), model.stats(), key, thresholds, position_scale=model.position_scale.value
        )
        model.set_pool(new_pool)
        model.set_stats(pool_lib.zero_stats(model.capacity))
        remap_optimizer(model, optimizer, remap)
        return counts

    return densify


def _reset_opacity(model: GaussianSplats, optimizer: nnx.Optimizer) -> None:
    """graphdeco `reset_opacity`: opacity <- min(opacity, 0.01), the opacity moments start again from zero."""
    model.set_pool(pool_lib.reset_opacity(model.pool()))
    capacity = model.capacity
    everything = pool_lib.SlotRemap(jnp.arange(capacity, dtype=jnp.int32), jnp.ones((capacity,), bool))
    remap_optimizer(model, optimizer, everything, names=(pool_lib.OPACITY_LOGITS,))


def _make_grow_fn(new_capacity: int):
    def grow(model: GaussianSplats, optimizer: nnx.Optimizer) -> None:
        capacity = model.capacity
        names = model.attribute_names + (SCREEN_OFFSET,)
        state = _optimizer_state(optimizer)
        grown = pool_lib.grow(state, capacity, new_capacity, names)
        model.grow(new_capacity)
        nnx.update(optimizer, grown)

    return grow
