"""Plain 3DGS (models/gs3d): pool densification ops on hand-made pools, initialisation, rendering of the pool, and a
short trainer run on a tiny COLMAP scene that clones, splits and prunes without recompiling."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from kernels.rasterize import rasterize
from models.gs3d import pool as pool_lib
from models.gs3d.losses import photometric_loss, psnr, ssim
from models.gs3d.model import GaussianSplats
from models.gs3d.tasks import _make_grow_fn, _reset_opacity, remap_optimizer
from zoo.data import colmap

ONE = jax.devices()[:1]  # the task renders one view per step: a one-device mesh
SIZE = 32


# ---------------------------------------------------------------------------------------------- hand-made pools
def _hand_pool(capacity: int = 8, active: int = 4) -> dict[str, jnp.ndarray]:
    """Slots 0-3 active: 0 small (clone), 1 large (split), 2 transparent (prune), 3 quiet; a 5-d extra feature."""
    pool = pool_lib.empty_pool(capacity, sh_degree=1)
    rng = np.random.default_rng(0)
    pool["positions"][:] = rng.normal(size=(capacity, 3))
    pool["quats"][:] = rng.normal(size=(capacity, 4))
    pool["log_scales"][:active] = np.log([[0.01, 0.02, 0.015], [0.2, 0.1, 0.3], [0.05] * 3, [0.05] * 3])[:active]
    pool["opacity_logits"][:active] = pool_lib.inverse_sigmoid(np.array([0.5, 0.6, 0.001, 0.7], np.float32))[:active]
    pool["sh_dc"][:] = rng.normal(size=pool["sh_dc"].shape)
    pool["sh_rest"][:] = rng.normal(size=pool["sh_rest"].shape)
    pool["features"] = np.arange(capacity * 5, dtype=np.float32).reshape(capacity, 5)
    pool["active"][:active] = True
    return {k: jnp.asarray(v) for k, v in pool.items()}


def _hand_stats(capacity: int = 8) -> pool_lib.DensifyStats:
    grad = np.zeros(capacity, np.float32)
    grad[:4] = [0.01, 0.02, 0.0, 1e-5]
    count = np.zeros(capacity, np.float32)
    count[:4] = 2.0
    return pool_lib.DensifyStats(jnp.asarray(grad), jnp.asarray(count), jnp.zeros(capacity))


THRESHOLDS = pool_lib.DensifyThresholds(grad=1e-3, clone_max_scale=0.05, min_opacity=0.005)
# Jitted as the trainer runs it (one compile per pool shape instead of op-by-op dispatch).
densify_and_prune = jax.jit(pool_lib.densify_and_prune, static_argnames=("split_samples",))


def test_clone_split_prune_keep_attributes_and_remap_moments():
    pool, stats, key, scale = _hand_pool(), _hand_stats(), jax.random.key(3), 2.0
    out, remap, counts = densify_and_prune(pool, stats, key, THRESHOLDS, position_scale=scale)
    assert {k: int(v) for k, v in counts.items()} == {
        "n_clone": 1, "n_split": 1, "n_prune": 1, "n_dropped": 0, "n_active": 5
    }  # fmt: skip
    np.testing.assert_array_equal(out["active"], [True, True, False, True, True, True, False, False])
    np.testing.assert_array_equal(remap.source, [0, 1, 2, 3, 0, 1, 6, 7])
    np.testing.assert_array_equal(remap.fresh, [False, True, True, False, True, True, False, False])
    for name in pool:
        if name == "active":
            continue
        # The clone (slot 4) is an exact copy of slot 0, which is unchanged, extra feature included; the quiet slot
        # 3 is untouched.
        np.testing.assert_array_equal(out[name][4], pool[name][0], err_msg=name)
        np.testing.assert_array_equal(out[name][0], pool[name][0], err_msg=name)
        np.testing.assert_array_equal(out[name][3], pool[name][3], err_msg=name)
        if name not in ("positions", "log_scales"):
            # Both split halves (slot 1 and slot 5) carry the original's other attributes.
            np.testing.assert_array_equal(out[name][1], pool[name][1], err_msg=name)
            np.testing.assert_array_equal(out[name][5], pool[name][1], err_msg=name)
    np.testing.assert_allclose(out["log_scales"][1], pool["log_scales"][1] - math.log(1.6), rtol=1e-6)
    np.testing.assert_allclose(out["log_scales"][5], pool["log_scales"][1] - math.log(1.6), rtol=1e-6)
    # The halves sit at mean + R (S * eps), eps the standard normal draw of `key` for their slot (stored positions
    # are in units of position_scale).
    eps = np.asarray(jax.random.normal(key, (8, 3), jnp.float32))
    rotation = np.asarray(pool_lib.quat_to_rotmat(pool["quats"][1:2]))[0]
    sigma = np.exp(np.asarray(pool["log_scales"][1]))
    for slot in (1, 5):
        expected = np.asarray(pool["positions"][1]) + rotation @ (sigma * eps[slot]) / scale
        np.testing.assert_allclose(out["positions"][slot], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["positions"][1], out["positions"][5])

    # Adam moments follow their slots: kept for unchanged slots, zero for the clone, both halves and the pruned.
    moments = {"mu": {"positions": jnp.arange(8.0)[:, None] + jnp.ones((8, 3)), "other": jnp.ones((8, 2))},
               "count": jnp.asarray(7)}  # fmt: skip
    moved = pool_lib.remap_slot_state(moments, remap, 8, names=("positions",))
    np.testing.assert_array_equal(moved["mu"]["positions"][:, 0], [1.0, 0.0, 0.0, 4.0, 0.0, 0.0, 7.0, 8.0])
    np.testing.assert_array_equal(moved["mu"]["other"], moments["mu"]["other"])  # not a pool attribute
    assert int(moved["count"]) == 7


def test_full_pool_drops_candidates_without_touching_them():
    pool = _hand_pool(capacity=5)  # one free slot for two candidates: slot 0 gets it, slot 1 is not split
    out, _, counts = densify_and_prune(pool, _hand_stats(5), jax.random.key(0), THRESHOLDS)
    assert int(counts["n_clone"]) == 1 and int(counts["n_split"]) == 0 and int(counts["n_dropped"]) == 1
    for name in pool:
        if name != "active":
            np.testing.assert_array_equal(out[name][1], pool[name][1], err_msg=name)
            np.testing.assert_array_equal(out[name][4], pool[name][0], err_msg=name)
    assert int(pool_lib.densify_demand(pool, _hand_stats(5), THRESHOLDS.grad)) == 6  # 4 active + 2 candidates


def test_screen_and_world_size_pruning():
    pool, stats = _hand_pool(), _hand_stats()
    stats = stats._replace(max_radii=jnp.asarray([0.0, 0.0, 0.0, 30.0, 0, 0, 0, 0]))
    late = THRESHOLDS._replace(max_screen_size=20.0, max_world_scale=0.25)
    out, remap, counts = densify_and_prune(pool, stats, jax.random.key(0), late)
    # Slot 3 is too large on screen; slot 1's largest scale 0.3 / 1.6 = 0.19 passes the world test; slot 2 opacity.
    np.testing.assert_array_equal(out["active"][:6], [True, True, False, False, True, True])
    assert int(counts["n_prune"]) == 2 and bool(remap.fresh[3])
    strict = THRESHOLDS._replace(max_world_scale=0.15)
    out, _, _ = densify_and_prune(pool, _hand_stats(), jax.random.key(0), strict)
    np.testing.assert_array_equal(out["active"][:6], [True, False, False, True, True, False])  # both halves


def test_statistics_are_graphdeco_ndc_gradient_norms():
    stats = pool_lib.zero_stats(3)
    grad = jnp.asarray([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    radii = jnp.asarray([[2, 2], [0, 0], [5, 3]])
    stats = pool_lib.accumulate_stats(stats, grad, radii, 40, 20)
    stats = pool_lib.accumulate_stats(stats, grad, radii, 40, 20)
    # d/dndc = d/dpixel * (W/2, H/2) = (20, 10): |(20, 0)| = 20; |(60, 40)| = 72.11; slot 1 not visible.
    np.testing.assert_allclose(stats.grad_accum, [40.0, 0.0, 2 * math.hypot(60.0, 40.0)], rtol=1e-6)
    np.testing.assert_array_equal(stats.vis_count, [2.0, 0.0, 2.0])
    np.testing.assert_array_equal(stats.max_radii, [2.0, 0.0, 5.0])


def test_opacity_reset_caps_at_one_percent():
    pool = {"opacity_logits": pool_lib.inverse_sigmoid(jnp.asarray([0.5, 0.005]))}
    np.testing.assert_allclose(jax.nn.sigmoid(pool_lib.reset_opacity(pool)["opacity_logits"]), [0.01, 0.005],
                               rtol=1e-5)  # fmt: skip


def test_init_from_points_follows_graphdeco():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    pool = pool_lib.init_from_points(xyz, rgb, 64, position_scale=2.0)
    d2 = np.sum((xyz[:, None] - xyz[None]) ** 2, -1)
    np.fill_diagonal(d2, np.inf)
    expected = np.log(np.sqrt(np.mean(np.sort(d2, axis=1)[:, :3], axis=1)))
    np.testing.assert_allclose(pool["log_scales"][:50], np.repeat(expected[:, None], 3, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pool["sh_dc"][:50, 0] * pool_lib.SH_C0 + 0.5, rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(pool["positions"][:50] * 2.0, xyz, rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-pool["opacity_logits"])), 0.1, rtol=1e-6)
    assert pool["active"].sum() == 50 and not np.any(pool["sh_rest"])
    with pytest.raises(ValueError, match="capacity"):
        pool_lib.init_from_points(xyz, rgb, 16)


# ---------------------------------------------------------------------------------------------- the model
def _look_at(center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    forward = -center / np.linalg.norm(center)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    return rotation, -rotation @ center


def _camera(index: int, views: int) -> tuple[np.ndarray, np.ndarray]:
    angle = 2 * np.pi * index / views
    center = np.array([4 * np.cos(angle), 4 * np.sin(angle), 1.0 + 0.5 * np.sin(3 * angle)])
    rotation, translation = _look_at(center)
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[:3, :3], viewmat[:3, 3] = rotation, translation
    K = np.array([[SIZE, 0, SIZE / 2], [0, SIZE, SIZE / 2], [0, 0, 1]], np.float32)
    return viewmat, K


def test_inactive_slots_render_nothing_and_sh_warms_up():
    model = GaussianSplats(4, sh_degree=3, sh_degree_interval=10)
    pool = {k: np.array(v) for k, v in model.pool().items()}
    pool["positions"][:2] = [[0.0, 0.0, 0.0], [0.5, 0.0, 0.3]]
    pool["log_scales"][:2] = np.log(0.3)
    pool["opacity_logits"][:] = 5.0  # opaque everywhere, the inactive slot 1 included
    pool["sh_dc"][:2] = 1.0
    pool["sh_rest"][:2] = 0.5
    pool["active"][:] = [True, False, False, False]
    model.load_pool(pool)
    viewmat, K = _camera(0, 8)
    render = nnx.jit(lambda m, v, k: m.render(v, k, SIZE, SIZE))  # one compile beats op-by-op dispatch
    out = render(model, jnp.asarray(viewmat), jnp.asarray(K))
    alone = GaussianSplats(1, sh_degree=3, sh_degree_interval=10)
    alone.load_pool({k: v[:1] for k, v in pool.items()})
    ref = render(alone, jnp.asarray(viewmat), jnp.asarray(K))
    np.testing.assert_allclose(out.image, ref.image, atol=1e-6)
    assert int(out.n_intersections[0]) == int(ref.n_intersections[0]) > 0
    assert np.all(np.asarray(out.radii[0, 1:]) == 0)
    # SH degree warm-up: iteration i (0-based) renders degree min((i + 1) // interval, 3).
    for iteration, degree in ((0, 0), (8, 0), (9, 1), (29, 3), (1000, 3)):
        model.iteration.value = jnp.asarray(iteration, jnp.int32)
        coefficients = np.asarray(model.sh_coefficients())
        assert np.all(coefficients[0, 1 : (degree + 1) ** 2] == 0.5) and not np.any(
            coefficients[0, (degree + 1) ** 2 :]
        )


def test_grow_pads_pool_and_moments():
    model = GaussianSplats(4, sh_degree=1, extra_attributes={"features": (3,)})
    pool = {k: np.array(v) for k, v in model.pool().items()}
    pool["active"][:3] = True
    pool["features"][:] = 1.0
    model.load_pool(pool)
    import optax

    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    _make_grow_fn(8)(model, optimizer)
    assert model.capacity == 8 and model.features.value.shape == (8, 3) and model.grad_accum.value.shape == (8,)
    np.testing.assert_array_equal(model.active.value, [True] * 3 + [False] * 5)
    np.testing.assert_array_equal(model.quats.value[4:], np.tile([1.0, 0, 0, 0], (4, 1)))
    mu = optimizer.opt_state[0].mu
    np.testing.assert_array_equal(np.asarray(mu["features"].value)[:4], np.float32(0.1))  # (1 - b1) * grad
    np.testing.assert_array_equal(np.asarray(mu["features"].value)[4:], 0.0)
    # The opacity reset zeroes the opacity moments only.
    _reset_opacity(model, optimizer)
    assert not np.any(np.asarray(optimizer.opt_state[0].mu["opacity_logits"].value))
    assert np.all(np.asarray(optimizer.opt_state[0].mu["sh_dc"].value)[:4] == np.float32(0.1))
    remap_optimizer(model, optimizer, pool_lib.SlotRemap(jnp.arange(8), jnp.arange(8) == 0))
    assert not np.any(np.asarray(optimizer.opt_state[0].nu["sh_dc"].value)[0])


def test_losses_match_their_definitions():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(size=(20, 24, 3)), jnp.float32)
    np.testing.assert_allclose(ssim(a, a), 1.0, rtol=1e-5)
    b = jnp.clip(a + 0.1, 0, 1)
    mse = float(jnp.mean((a - b) ** 2))
    np.testing.assert_allclose(psnr(a, b), -10 * np.log10(mse), rtol=1e-5)
    loss, terms = photometric_loss(a, b)
    np.testing.assert_allclose(loss, 0.8 * float(jnp.mean(jnp.abs(a - b))) + 0.2 * (1 - float(terms["ssim"])),
                               rtol=1e-6)  # fmt: skip
    # A padded canvas: the metrics of the valid region ignore what lies outside it.
    valid = jnp.zeros((20, 24)).at[:, :12].set(1.0)
    junk = b.at[:, 12:].set(0.0)
    np.testing.assert_allclose(psnr(a, junk, valid), psnr(a[:, :12], b[:, :12]), rtol=1e-5)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    """A COLMAP scene rendered from 40 known Gaussians with the rasterizer: 8 views (the first is the test view),
    SfM points = 24 of the true means with noise."""
    root = tmp_path_factory.mktemp("gs3d_scene")
    rng = np.random.default_rng(0)
    n, views = 40, 8
    means = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.08), np.log(0.25), (n, 3))).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    rgb = rng.uniform(0.1, 0.9, (n, 3)).astype(np.float32)
    sh = pool_lib.rgb_to_sh_dc(rgb)[:, None]
    (root / "images").mkdir()
    camera = colmap.Camera(1, "PINHOLE", SIZE, SIZE, np.array([SIZE, SIZE, SIZE / 2, SIZE / 2], np.float64))
    images = {}
    render = jax.jit(lambda v, k: rasterize(jnp.asarray(means), jnp.asarray(quats), jnp.asarray(scales),
                                            jnp.full((n,), 0.8), jnp.asarray(sh), v, k, SIZE, SIZE,
                                            sh_degree=0).image[0])  # fmt: skip
    for i in range(views):
        viewmat, K = _camera(i, views)
        pixels = np.clip(np.asarray(render(viewmat, K)) * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"view_{i:02d}.png")
        rotation = viewmat[:3, :3].astype(np.float64)
        images[i + 1] = colmap.ColmapImage(i + 1, colmap.rotmat_to_qvec(rotation), viewmat[:3, 3].astype(np.float64),
                                           1, f"view_{i:02d}.png")  # fmt: skip
    points = means[:24] + rng.normal(0, 0.05, (24, 3))
    colmap.write_model(root / "sparse" / "0", {1: camera}, images,
                       colmap.Points3D.from_arrays(points, (rgb[:24] * 255).astype(np.uint8)))  # fmt: skip
    return root


def _tiny_config(scene, steps: int):
    from configs.gs3d import get_config

    config = get_config("tiny")
    config.data.train.name = f"colmap:{scene}"
    config.data.train.kwargs = {"holdout": 8}
    config.num_train_steps = steps
    gs = config.gaussians
    gs.capacity = 256
    # No opacity reset in so short a run (opacities need ~100 steps to recover from 0.01; the reset has its own
    # test); at 32 px gradients are larger than at graphdeco's resolutions, hence the higher grad threshold.
    gs.densify_from, gs.densify_every, gs.densify_until, gs.opacity_reset_every = 4, 4, 22, 1000
    gs.sh_degree_interval = 10
    gs.grad_threshold, gs.percent_dense, gs.min_opacity = 5e-3, 0.05, 0.05
    config.log_every = 1
    # Scored on the training views: 40 steps fit them, while novel-view quality from 7 cameras needs a longer run.
    config.data.eval.split = "train"
    return config


def test_training_clones_splits_prunes_without_recompiling(tiny_scene, tmp_path):
    from zoo.train.trainer import Trainer

    compiles: list[int] = []
    trainer = None

    def on_compile(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(trainer.step if trainer is not None else -1)

    jax.monitoring.register_event_duration_secs_listener(on_compile)
    try:
        config = _tiny_config(tiny_scene, 40)
        trainer = Trainer(config, str(tmp_path), devices=ONE)
        before = trainer.evaluate()
        summary = trainer.run()
    finally:
        jax.monitoring.unregister_event_duration_listener(on_compile)
    task = trainer.task
    densified = [e for e in task.densify_log if "n_clone" in e]
    assert [e["step"] for e in densified] == [8, 12, 16, 20]
    assert sum(e["n_clone"] for e in densified) > 0
    assert sum(e["n_split"] for e in densified) > 0
    assert sum(e["n_prune"] for e in densified) > 0
    assert all(e["capacity"] == 256 and e["n_dropped"] == 0 for e in densified)  # no growth in this run
    # Every compiled function was compiled once: the train and eval steps and the two densification functions.
    assert trainer._train_step._cache_size() == 1 and trainer._eval_step._cache_size() == 1
    assert {fn.__name__: jitted._cache_size() for fn, jitted in trainer._state_fns.items()} == {
        "_demand": 1, "densify": 1
    }  # fmt: skip
    # ... and nothing compiled after the first densification, although the pool kept changing.
    assert not [step for step in compiles if step > 8], compiles
    counts = [e["n_active"] for e in densified]
    assert len(set(counts)) > 1
    # Training works: PSNR on the training views rises and the loss falls.
    assert summary["eval/psnr"] > before["psnr"], (before, summary)
    from zoo.train.metrics import read_metrics

    losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    # The run reloads by name from its workdir: the same pool, mask and extent.
    import zoo

    reloaded = zoo.create_model("gs3d", pretrained=str(tmp_path))
    trained = trainer.eval_model()
    for name, value in trained.pool().items():
        np.testing.assert_array_equal(reloaded.pool()[name], value, err_msg=name)
    assert float(reloaded.position_scale.value) == pytest.approx(task.extent)


class _EagerTrainer:
    """The two state hooks of `zoo.train.trainer.Trainer`, applied eagerly to a model and optimizer."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def update_state(self, fn, *args):
        return fn(self.model, self.optimizer, *args)

    reshape_state = update_state


def test_task_grows_a_full_pool_before_densifying(tiny_scene):
    import optax

    from models.gs3d.tasks import GaussianSplattingTask

    config = _tiny_config(tiny_scene, 40)
    config.gaussians.capacity = 32  # 24 SfM points: every one a candidate needs 48 slots
    task = GaussianSplattingTask(config)
    model = task.build_model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    optimizer.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    active = np.asarray(model.active.value)
    model.set_stats(pool_lib.DensifyStats(jnp.asarray(active * 1.0), jnp.asarray(active * 1.0), jnp.zeros(32)))
    task.on_step_end(_EagerTrainer(model, optimizer), 8)
    entry = task.densify_log[-1]
    assert task.capacity == model.capacity == 64 and task.model_overrides()["capacity"] == 64
    assert entry["n_clone"] + entry["n_split"] == 24 and entry["n_dropped"] == 0
    assert entry["n_active"] == 48 - entry["n_prune"]
    mu = optimizer.opt_state[0].mu
    assert all(mu[name].value.shape[0] == 64 for name in model.attribute_names)
    # Moments of the 24 originals: kept for the cloned ones, zero for split halves and every new slot.
    fresh = np.asarray(mu["sh_dc"].value)[:, 0, 0] == 0
    assert fresh[24:].all() and fresh[:24].sum() == entry["n_split"]
