"""Wild-GS model and task (models/wildgs/model.py, tasks.py): the loss terms on hand-made arrays, the reference-SH
cache of the model, and a short trainer run on a tiny embedded duck scene that compiles its step once, lowers the
loss, evaluates with the left-half / right-half protocol and mask IoU, and reloads by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.wildgs.model import WildGS
from models.wildgs.tasks import (
    half_view,
    mask_regulariser,
    mask_weight,
    masked_photometric_loss,
    pearson_depth_loss,
    wild_view_transform,
)
from tests.helpers import numpy_random_init

ONE = jax.devices()[:1]  # the task renders one view per step: a one-device mesh


# ---------------------------------------------------------------------------------------------- loss terms
def test_masked_pixels_do_not_contribute():
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.uniform(size=(24, 20, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(24, 20, 3)), jnp.float32)
    mask = jnp.ones((24, 20)).at[5:15, 3:12].set(0.0)
    loss, terms = masked_photometric_loss(image, target, mask)
    # Anything under the mask (an occluder in the target, garbage in the render) leaves the loss unchanged ...
    occluded = target.at[5:15, 3:12].set(jnp.asarray(rng.uniform(size=(10, 9, 3)), jnp.float32))
    garbage = image.at[5:15, 3:12].set(7.0)
    np.testing.assert_array_equal(masked_photometric_loss(garbage, occluded, mask)[0], loss)
    # ... and gets no gradient, while the visible pixels do.
    grad = jax.grad(lambda x: masked_photometric_loss(x, target, mask)[0])(image)
    assert not np.any(np.asarray(grad)[5:15, 3:12]) and np.all(np.abs(np.asarray(grad)[16:]) > 0)
    # With a full mask it is 3DGS's loss: 0.8 L1 + 0.2 (1 - SSIM).
    full, full_terms = masked_photometric_loss(image, target, jnp.ones((24, 20)))
    expected = 0.8 * float(jnp.mean(jnp.abs(image - target))) + 0.2 * (1.0 - float(full_terms["ssim"]))
    np.testing.assert_allclose(full, expected, rtol=1e-6)
    assert float(terms["l1"]) < float(full_terms["l1"])


def test_pearson_depth_loss_is_affine_invariant():
    rng = np.random.default_rng(1)
    depth = jnp.asarray(rng.uniform(1.0, 3.0, (16, 16)), jnp.float32)
    weight = jnp.ones((16, 16)).at[:4].set(0.0)
    for scale, shift in ((1.0, 0.0), (0.3, 2.0), (25.0, -7.0)):
        loss = pearson_depth_loss(depth, scale * depth + shift, weight)
        assert abs(float(loss)) < 1e-5, (scale, shift, float(loss))
    unrelated = jnp.asarray(rng.uniform(1.0, 3.0, (16, 16)), jnp.float32)
    assert 0.5 < float(pearson_depth_loss(depth, unrelated, weight)) < 1.5  # ~ 1 - 0 for independent maps
    np.testing.assert_allclose(pearson_depth_loss(depth, -2.0 * depth + 1.0, weight), 2.0, rtol=1e-5)
    # Inverse depth: the correlation is taken with -target.
    assert abs(float(pearson_depth_loss(depth, -depth, weight, disparity=True))) < 1e-5
    # Pixels outside the weight do not matter; fewer than two pixels give 0.
    junk = (3.0 * depth + 1.0).at[:4].set(100.0)
    assert abs(float(pearson_depth_loss(depth, junk, weight))) < 1e-5
    assert float(pearson_depth_loss(depth, unrelated, jnp.zeros((16, 16)).at[0, 0].set(1.0))) == 0.0
    grad = jax.grad(lambda d: pearson_depth_loss(d, unrelated, weight))(depth)
    assert np.all(np.isfinite(np.asarray(grad))) and not np.any(np.asarray(grad)[:4])


def test_mask_regulariser_and_its_linear_decay():
    np.testing.assert_allclose(mask_weight(0, 0.4, 0.1, 1000), 0.4, rtol=1e-6)
    np.testing.assert_allclose(mask_weight(500, 0.4, 0.1, 1000), 0.25, rtol=1e-6)
    np.testing.assert_allclose(mask_weight(1000, 0.4, 0.1, 1000), 0.1, rtol=1e-6)
    np.testing.assert_allclose(mask_weight(5000, 0.4, 0.1, 1000), 0.1, rtol=1e-6)
    steps = np.asarray([float(mask_weight(i, 0.4, 0.1, 100)) for i in range(0, 101, 10)])
    np.testing.assert_allclose(np.diff(steps), -0.03, rtol=1e-4)  # linear
    mask = jnp.full((4, 6), 0.75).at[0].set(1.0)
    np.testing.assert_allclose(mask_regulariser(mask), 0.0625 * 18 / 24, rtol=1e-6)
    valid = jnp.zeros((4, 6)).at[0].set(1.0)
    assert float(mask_regulariser(mask, valid)) == 0.0  # only the valid (unmasked, = 1) row counts


def test_view_transform_names_a_missing_field():
    example = {"image": np.zeros((8, 8, 3), np.uint8), "R": np.eye(3), "t": np.zeros(3), "K": np.eye(3)}
    with pytest.raises(KeyError, match="depth_key"):
        wild_view_transform(8, 8, ("depth",))(example)
    out = wild_view_transform(10, 8, ("depth",))({**example, "depth": np.ones((8, 8))})
    assert out["depth"].shape == (8, 10) and out["depth"][:, 8:].sum() == 0 and out["depth"][:, :8].min() == 1.0


# ---------------------------------------------------------------------------------------------- the model
TINY_APPEARANCE = {
    "global_dim": 4, "local_dim": 4, "fusion_widths": (16,),
    "parsing": {"stem_width": 4, "widths": (4, 8, 8, 8), "depths": (1, 1, 1, 1), "decoder_widths": (8, 8, 4, 4, 4),
                "global_hidden": 8},
    "triplane": {"resolution": 8, "plane_channels": 4, "unet_widths": (4, 8), "local_hidden": 8},
}  # fmt: skip
SIZE = 32


def _random_wildgs(capacity: int = 16) -> WildGS:
    """A tiny WildGS with numpy random weights on its abstract shapes (building through the initialisers compiles
    one program per parameter shape, slow on a busy CPU), 12 active Gaussians in front of a camera."""
    abstract = nnx.eval_shape(lambda: WildGS(capacity, feature_dim=8, appearance=TINY_APPEARANCE, rngs=nnx.Rngs(0)))
    # Appearance biases N(0, 0.1) (zero ones would map empty planes to zero embeddings); the pool, its state, the AABB
    # and the SH cache zero (the pool is set below).
    std = lambda path: 0.1 if path[0] == "appearance" else 0.0
    model, rng = numpy_random_init(abstract, 0, param_std=std)
    pool = {k: np.array(v) for k, v in model.pool().items()}
    pool["positions"][:12] = rng.uniform(-0.6, 0.6, (12, 3))
    pool["log_scales"][:12] = np.log(0.25)
    pool["opacity_logits"][:12] = 2.0
    pool["quats"][:] = [1.0, 0.0, 0.0, 0.0]
    pool["features"][:12] = rng.normal(size=(12, 8))
    pool["active"][:12] = True
    model.load_pool(pool, position_scale=1.0)
    model.refresh_aabb(ratio=1.2)
    return model


def _camera(angle: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    center = np.array([3.0 * np.cos(angle), 3.0 * np.sin(angle), 0.8])
    forward = -center / np.linalg.norm(center)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[:3, :3], viewmat[:3, 3] = rotation, -rotation @ center
    K = np.array([[SIZE, 0, SIZE / 2], [0, SIZE, SIZE / 2], [0, 0, 1]], np.float32)
    return jnp.asarray(viewmat), jnp.asarray(K)


def test_model_renders_the_cached_reference_appearance():
    model = _random_wildgs()
    box = np.asarray(model.appearance.aabb[...])
    means = np.asarray(model.means())[:12]
    # The crop of the 12 active means only (the 4 inactive slots sit at the origin and must not count).
    half = 0.6 * (np.quantile(means, 0.99, axis=0) - np.quantile(means, 0.01, axis=0))
    np.testing.assert_allclose(box, np.stack([np.median(means, 0) - half, np.median(means, 0) + half]), atol=1e-5)
    viewmat, K = _camera(0.3)
    dark = jnp.full((SIZE, SIZE, 3), 0.1).at[:, :, 0].set(0.6)
    bright = jnp.full((SIZE, SIZE, 3), 0.9).at[:, :, 2].set(0.2)

    @nnx.jit
    def run(model, viewmat, K):
        a = model.embed(dark, viewmat, K)
        b = model.embed(bright, viewmat, K)
        model.set_reference(dark, viewmat, K)
        cached = model.reference_sh.value
        first = model.render(viewmat, K, SIZE, SIZE).image[0]
        again = model.render(viewmat, K, SIZE, SIZE).image[0]  # the cache holds: same SH, same image
        model.set_reference(bright, viewmat, K)
        second = model.render(viewmat, K, SIZE, SIZE).image[0]
        model.set_interpolated_reference(a, b, 0.0)
        start = model.reference_sh.value
        gated = model.embed(dark, viewmat, K, use_triplane=jnp.asarray(False))
        return cached, first, again, second, start, a, gated

    cached, first, again, second, start, a, gated = run(model, viewmat, K)
    np.testing.assert_array_equal(first, again)
    assert float(jnp.max(jnp.abs(first - second))) > 1e-4  # another reference, another appearance
    np.testing.assert_allclose(start, cached, rtol=1e-5, atol=1e-6)  # t = 0 is the first reference
    assert float(jnp.max(jnp.abs(a.local_embedding))) > 0 and not np.any(np.asarray(gated.local_embedding))
    # The SH degree warm-up applies to the cached SH: at iteration 0 only the DC band renders.
    coefficients = np.asarray(model.sh_coefficients())
    assert not np.any(coefficients[:, 1:]) and np.any(coefficients[:, 0])
    model.grow(32)
    assert model.reference_sh.value.shape[0] == 32 and model.features.value.shape == (32, 8)
    with pytest.raises(ValueError, match="feature_dim"):
        WildGS(4, appearance={"feature_dim": 8})


def test_half_view_crops_keep_the_camera_geometry():
    """A half crop (the eval reference and `reference_crop`) with its shifted principal point back-projects its pixels
    to the same 3-D points as the whole view does: the triplane colour maps of the right half alone equal those of the
    whole view with only its right-half pixels visible (and the same for the left half)."""
    model = _random_wildgs()
    viewmat, K = _camera(0.7)
    depth = model.reference_depth(viewmat, K, SIZE, SIZE)
    assert float(jnp.mean(depth > 0)) > 0.05
    image = jnp.asarray(np.random.default_rng(3).uniform(size=(SIZE, SIZE, 3)), jnp.float32)
    triplane, aabb = model.appearance.triplane, model.appearance.aabb[...]
    columns = jnp.arange(SIZE)[None, :] >= SIZE // 2
    for right in (False, True):
        crop_image, crop_depth, crop_K = half_view(image, depth, K, jnp.asarray(right))
        assert crop_image.shape == (SIZE, SIZE // 2, 3) and crop_depth.shape == (SIZE, SIZE // 2)
        cropped = triplane.colour_maps(crop_image, crop_depth, crop_K, viewmat, jnp.ones(crop_depth.shape, bool), aabb)
        visible = jnp.broadcast_to(columns == right, (SIZE, SIZE))
        whole = triplane.colour_maps(image, depth, K, viewmat, visible, aabb)
        for a, b in zip(jax.tree.leaves(cropped), jax.tree.leaves(whole), strict=True):
            # Per-cell means of [0, 1] colours over tens of pixels, summed in another order: f32 rounding ~1e-6.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        assert float(jnp.max(cropped[1])) > 0  # some cells are covered


def test_task_rejects_bad_choices():
    from configs.wildgs import get_config
    from models.wildgs.tasks import WildGSTask

    config = get_config("tiny")
    config.wildgs.eval_protocol = "quarter"
    with pytest.raises(ValueError, match="eval_protocol"):
        WildGSTask(config)
    config = get_config("tiny")
    config.wildgs.reference_crop = 1.5
    with pytest.raises(ValueError, match="reference_crop"):
        WildGSTask(config)
    config = get_config("tiny")
    config.wildgs.triplane_depth, config.wildgs.depth_key = "data", ""
    with pytest.raises(ValueError, match="depth_key"):
        WildGSTask(config)


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_training_on_a_tiny_duck_compiles_once_and_reloads(tmp_path):
    from configs.wildgs import get_config
    from zoo.train.metrics import read_metrics
    from zoo.train.trainer import Trainer

    config = get_config("tiny")
    config.data.train.kwargs = {"resolution": 32, "num_train": 6, "num_test": 2, "num_points": 200}
    config.num_train_steps = 24
    gs = config.gaussians
    # densify_from 0: no white-background opacity reset in so short a run (gs3d's test has the reset's own test).
    gs.densify_from, gs.densify_every, gs.densify_until = 0, 8, 20
    gs.grad_threshold, gs.percent_dense = 1e-3, 0.05
    gs.capacity = 1024  # room for two densifications of the 200 points: the pool never grows (a recompile)
    config.wildgs.warmup_steps = 8
    trainer = Trainer(config, str(tmp_path), devices=ONE)
    before = trainer.evaluate()
    summary = trainer.run()
    task = trainer.task
    densified = [e for e in task.densify_log if "n_clone" in e]
    assert [e["step"] for e in densified] == [8, 16] and all(e["capacity"] == 1024 for e in densified)
    assert sum(e["n_clone"] + e["n_split"] for e in densified) > 0
    # One compile each, although the pool changed and the warm-up ended (a traced gate) in the run.
    assert trainer._train_step._cache_size() == 1 and trainer._eval_step._cache_size() == 1
    assert {fn.__name__: jitted._cache_size() for fn, jitted in trainer._state_fns.items()} == {
        "_demand": 1, "densify": 1, "_refresh_aabb": 1
    }  # fmt: skip
    records = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    photometric = [r["train/photometric"] for r in records]
    assert np.mean(photometric[-6:]) < np.mean(photometric[:6]), photometric
    assert records[0]["train/lambda_depth"] == 0.0 and records[-1]["train/lambda_depth"] == pytest.approx(0.05)
    assert summary["eval/psnr"] > before["psnr"], (before, summary)
    assert 0.0 <= summary["eval/mask_iou"] <= 1.0 and "eval/ssim" in summary
    import zoo

    reloaded = zoo.create_model("wildgs", pretrained=str(tmp_path))
    trained = trainer.eval_model()
    for name, value in trained.pool().items():
        np.testing.assert_array_equal(reloaded.pool()[name], value, err_msg=name)
    np.testing.assert_array_equal(reloaded.appearance.aabb[...], trained.appearance.aabb[...])
    np.testing.assert_array_equal(reloaded.appearance.fusion.out.kernel[...], trained.appearance.fusion.out.kernel[...])
