"""Compositing and gradients of kernels.rasterize: XLA path vs Pallas (interpret) vs naive references.

Scenes are small (a few hundred Gaussians, 64x48 pixels) to keep CPU compile and run time low.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.rasterize import (
    IntersectionOverflowError,
    bin_gaussians,
    check_overflow,
    get_convention,
    project_gaussians,
    rasterize,
)
from kernels.rasterize.composite import segment_sum_sorted
from kernels.rasterize.projection import tile_rect
from kernels.rasterize.sh import eval_sh

sys.path.insert(0, os.path.dirname(__file__))
from test_rasterize_reference import (
    dense_composite_jnp,
    intrinsics,
    look_at,
    naive_composite,
    random_scene,
)

WIDTH, HEIGHT = 64, 48
BACKGROUND = np.array([0.1, 0.2, 0.3, 0.0, 0.5], np.float32)


def _cameras():
    viewmats = np.stack([look_at([0.3, -0.5, -3.5], [0, 0, 0]), look_at([2.5, -1.0, -2.5], [0.1, 0, 0])])
    Ks = np.stack([intrinsics(WIDTH, HEIGHT, 55.0), intrinsics(WIDTH, HEIGHT, 60.0)])
    return viewmats, Ks


def _reference_images(scene, viewmat, K, convention_name):
    means, quats, scales, opacities, features = scene
    conv = get_convention(convention_name)
    proj = project_gaussians(means, quats, scales, viewmat, K, WIDTH, HEIGHT, conv)
    values = np.concatenate([features, np.asarray(proj.depths)[:, None]], axis=1)
    rects = tile_rect(proj.means2d, proj.radii, WIDTH, HEIGHT, 16, conv)
    image, alpha = naive_composite(
        proj.means2d, proj.conics, opacities, values, proj.depths, proj.radii, WIDTH, HEIGHT,
        np.concatenate([BACKGROUND, [0.0]]), alpha_max=conv.alpha_max, stop_inclusive=conv.stop_inclusive,
        tile_rects=rects,
    )  # fmt: skip
    depth = np.where(alpha > 0, image[..., -1] / np.where(alpha > 0, alpha, 1), 0)
    return image[..., :-1], alpha, depth


@pytest.mark.parametrize("convention", ["3dgs", "gsplat"])
def test_forward_xla_pallas_naive_agree(convention):
    """Images, alpha and expected depth of both impls match a float64 per-pixel loop within 1e-5 (2 cameras, 5-D
    features, background)."""
    scene = random_scene(250, seed=1, channels=5)
    viewmats, Ks = _cameras()
    render = jax.jit(rasterize, static_argnames=("width", "height", "convention", "impl"))
    outputs = {
        impl: render(
            *scene, viewmats, Ks, width=WIDTH, height=HEIGHT, background=BACKGROUND, convention=convention, impl=impl
        )
        for impl in ("xla", "pallas")
    }
    for cam in range(2):
        ref_image, ref_alpha, ref_depth = _reference_images(scene, viewmats[cam], Ks[cam], convention)
        assert ref_alpha.mean() > 0.2  # the scene covers the image
        for impl, out in outputs.items():
            assert not bool(out.overflow[cam])
            np.testing.assert_allclose(out.image[cam], ref_image, atol=1e-5, err_msg=impl)
            np.testing.assert_allclose(out.alpha[cam], ref_alpha, atol=1e-5, err_msg=impl)
            np.testing.assert_allclose(out.depth[cam], ref_depth, atol=1e-4, rtol=1e-5, err_msg=impl)
    np.testing.assert_allclose(outputs["xla"].image, outputs["pallas"].image, atol=1e-5)
    if convention == "3dgs":  # batching over cameras equals one camera at a time
        single = render(
            *scene,
            viewmats[1],
            Ks[1],
            width=WIDTH,
            height=HEIGHT,
            background=BACKGROUND,
            convention=convention,
            impl="xla",
        )
        np.testing.assert_allclose(single.image[0], outputs["xla"].image[1], atol=1e-6)


def _loss_inputs(seed=2, n=120):
    means, quats, scales, opacities, _ = random_scene(n, seed=seed, scale=0.12)
    rng = np.random.default_rng(seed)
    sh = (0.3 * rng.normal(size=(n, 9, 3))).astype(np.float32)
    sh[:, 0] += 0.8
    offset = np.zeros((1, n, 2), np.float32)
    return [jnp.asarray(a) for a in (means, quats, scales, opacities, sh, offset)]


def _weights(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _rasterize_loss(convention, impl, viewmat, K, deterministic=None):
    w_image, w_alpha, w_depth = (
        _weights((HEIGHT, WIDTH, 3), 10),
        _weights((HEIGHT, WIDTH), 11),
        _weights((HEIGHT, WIDTH), 12),
    )

    def loss(means, quats, scales, opacities, sh, offset):
        out = rasterize(
            means, quats, scales, opacities, sh, viewmat, K, WIDTH, HEIGHT, sh_degree=2, convention=convention,
            background=jnp.array([0.2, 0.1, 0.4]), means2d_offset=offset, impl=impl, deterministic=deterministic,
        )  # fmt: skip
        return jnp.sum(out.image[0] * w_image) + jnp.sum(out.alpha[0] * w_alpha) + 0.1 * jnp.sum(out.depth[0] * w_depth)

    return loss


def _reference_loss(convention, viewmat, K):
    conv = get_convention(convention)
    w_image, w_alpha, w_depth = (
        _weights((HEIGHT, WIDTH, 3), 10),
        _weights((HEIGHT, WIDTH), 11),
        _weights((HEIGHT, WIDTH), 12),
    )

    def loss(means, quats, scales, opacities, sh, offset):
        proj = project_gaussians(means, quats, scales, viewmat, K, WIDTH, HEIGHT, conv)
        means2d = proj.means2d + offset[0]
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
        colors = jnp.maximum(eval_sh(2, means - campos, sh) + 0.5, 0.0)
        values = jnp.concatenate([colors, proj.depths[:, None]], axis=1)
        rects = tile_rect(jax.lax.stop_gradient(means2d), proj.radii, WIDTH, HEIGHT, 16, conv)
        image, alpha = dense_composite_jnp(
            means2d, proj.conics, opacities, values, proj.depths, proj.radii, rects, WIDTH, HEIGHT,
            jnp.array([0.2, 0.1, 0.4, 0.0]), conv,
        )  # fmt: skip
        depth = jnp.where(alpha > 0, image[..., 3] / jnp.where(alpha > 0, alpha, 1.0), 0.0)
        return jnp.sum(image[..., :3] * w_image) + jnp.sum(alpha * w_alpha) + 0.1 * jnp.sum(depth * w_depth)

    return loss


NAMES = ("means", "quats", "scales", "opacities", "sh", "means2d")


@pytest.mark.parametrize("convention", ["3dgs", "gsplat"])
def test_gradients_match_dense_reference(convention):
    """Gradients wrt means, quats, scales, opacities, SH and the screen-space means (densification statistic) of the
    XLA path, the Pallas path and the deterministic reduction equal autodiff through a dense jnp reference."""
    viewmats, Ks = _cameras()
    viewmat, K = jnp.asarray(viewmats[0]), jnp.asarray(Ks[0])
    inputs = _loss_inputs()
    argnums = tuple(range(6))
    ref_value, ref_grads = jax.jit(jax.value_and_grad(_reference_loss(convention, viewmat, K), argnums))(*inputs)
    variants = [("xla", None)] + ([("pallas", None), ("xla", True)] if convention == "3dgs" else [])
    for impl, deterministic in variants:
        loss = _rasterize_loss(convention, impl, viewmat, K, deterministic)
        value, grads = jax.jit(jax.value_and_grad(loss, argnums))(*inputs)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        for name, g, r in zip(NAMES, grads, ref_grads):
            scale = float(jnp.max(jnp.abs(r)))
            assert scale > 0, name
            err = float(jnp.max(jnp.abs(g - r))) / scale
            assert err < 2e-4, f"{impl} deterministic={deterministic} {name}: relative error {err:.2e}"


_FD_SCRIPT = textwrap.dedent(
    """
    import sys, json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, {helpers!r})
    from test_rasterize_reference import random_scene, look_at, intrinsics
    from kernels.rasterize import rasterize
    n, W, H = 25, 32, 32
    means, quats, scales, opacities, feats = (np.asarray(a, np.float64) for a in random_scene(n, seed=5, scale=0.15))
    opacities = np.clip(opacities, 0.1, 0.9)  # keep away from the alpha clamp
    vm = look_at([0.2, -0.3, -3.0], [0, 0, 0]).astype(np.float64)
    K = intrinsics(W, H, 30.0).astype(np.float64)
    rng = np.random.default_rng(0)
    w_img, w_a = rng.normal(size=(H, W, 3)), rng.normal(size=(H, W))
    result = {{}}
    for impl in ("xla", "pallas"):
        def loss(means, quats, scales, opacities, feats):
            out = rasterize(means, quats, scales, opacities, feats, vm, K, W, H, background=jnp.array([0.3, 0.2, 0.1]),
                            impl=impl, convention="gsplat")
            return jnp.sum(out.image[0] * w_img) + jnp.sum(out.alpha[0] * w_a)
        args = [jnp.asarray(a) for a in (means, quats, scales, opacities, feats)]
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(5))))
        _, grads = value_and_grad(*args)
        errs = []
        for k, (a, g) in enumerate(zip(args, grads)):
            d = jnp.asarray(rng.normal(size=a.shape))
            eps = 1e-6
            plus = [x + eps * d if i == k else x for i, x in enumerate(args)]
            minus = [x - eps * d if i == k else x for i, x in enumerate(args)]
            fd = (value_and_grad(*plus)[0] - value_and_grad(*minus)[0]) / (2 * eps)
            an = jnp.vdot(g, d)
            errs.append(float(abs(fd - an) / max(abs(fd), 1e-3)))
        result[impl] = errs
    print(json.dumps(result))
    """
)


def test_gradients_match_finite_differences_float64():
    """Directional derivatives of both impls match central finite differences in float64 (x64 in a subprocess)."""
    script = _FD_SCRIPT.format(helpers=os.path.dirname(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for impl, errs in result.items():
        for name, err in zip(("means", "quats", "scales", "opacities", "features"), errs):
            assert err < 1e-5, f"{impl} {name}: relative FD error {err:.2e}"


def test_overflow_is_reported_not_silent():
    """Too small a capacity sets `overflow`, reports the true count, and `check_overflow` raises with advice."""
    scene = random_scene(200, seed=3)
    viewmats, Ks = _cameras()
    out = jax.jit(lambda *a: rasterize(*a, WIDTH, HEIGHT, capacity=64))(*scene, viewmats, Ks)
    assert bool(jnp.all(out.overflow))
    assert int(jnp.min(out.n_intersections)) > 64
    with pytest.raises(IntersectionOverflowError, match="capacity="):
        check_overflow(out, capacity=64)
    conv = get_convention("3dgs")
    for cam in range(2):
        proj = project_gaussians(*scene[:3], viewmats[cam], Ks[cam], WIDTH, HEIGHT, conv)
        bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, WIDTH, HEIGHT, conv, capacity=4096)
        assert not bool(bins.overflow)
        assert int(bins.n_intersections) == int(out.n_intersections[cam])
        small = bin_gaussians(proj.means2d, proj.radii, proj.depths, WIDTH, HEIGHT, conv, capacity=64)
        assert bool(small.overflow)
        # the kept intersections are a prefix of the emission order and stay sorted by (tile, depth)
        assert int(jnp.sum(small.tile_counts)) == 64


def test_segment_sum_sorted_is_exact():
    rows = jnp.asarray(np.random.default_rng(0).normal(size=(11, 3)).astype(np.float32))
    ends = jnp.array([2, 2, 7, 11], jnp.int32)
    expected = jnp.stack([rows[0:2].sum(0), jnp.zeros(3), rows[2:7].sum(0), rows[7:11].sum(0)])
    np.testing.assert_allclose(jax.jit(segment_sum_sorted)(rows, ends), expected, atol=1e-6)


def test_dispatcher():
    scene = random_scene(10, seed=0)
    viewmats, Ks = _cameras()
    with pytest.raises(ValueError, match="impl"):
        rasterize(*scene, viewmats, Ks, WIDTH, HEIGHT, impl="cuda")
    with pytest.raises(ValueError, match="convention"):
        rasterize(*scene, viewmats, Ks, WIDTH, HEIGHT, convention="inria")
    from kernels.rasterize import default_impl

    assert default_impl() == ("xla" if jax.default_backend() == "cpu" else "pallas")


def _occluded_scene(n, seed, channels):
    """A random scene plus 16 broad, nearly opaque Gaussians in front of its left half: there, whole tiles saturate
    and stop early (in the first and in the third chunk of 32 slots); elsewhere lists run to their end."""
    means, quats, scales, opacities, features = random_scene(n, seed=seed, scale=0.15, channels=channels)
    rng = np.random.default_rng(seed + 100)
    k = 16
    occ_means = np.stack([rng.uniform(-0.9, 0.1, k), rng.uniform(-0.9, 0.1, k), rng.uniform(-1.8, -1.4, k)], 1)
    rows = [
        (means, occ_means),
        (quats, np.tile([1.0, 0.0, 0.0, 0.0], (k, 1))),
        (scales, np.tile([0.5, 0.5, 0.05], (k, 1))),
        (opacities, np.full(k, 0.98)),
        (features, rng.uniform(0, 1, (k, channels))),
    ]
    return [np.concatenate(pair).astype(np.float32) for pair in rows]


def _early_stops(scene, viewmat, K, conv):
    """Per tile: (list length, number of Gaussians after which every pixel is done, or None), in float32 numpy."""
    means, quats, scales, opacities, _ = scene
    proj = project_gaussians(means, quats, scales, viewmat, K, WIDTH, HEIGHT, conv)
    bins = bin_gaussians(proj.means2d, proj.radii, proj.depths, WIDTH, HEIGHT, conv, capacity=8192)
    means2d, conics = np.asarray(proj.means2d), np.asarray(proj.conics)
    local_x, local_y = np.meshgrid(np.arange(16) + 0.5, np.arange(16) + 0.5)
    result = []
    for tile in range(len(bins.tile_counts)):
        px = (tile % (WIDTH // 16)) * 16 + local_x.ravel()
        py = (tile // (WIDTH // 16)) * 16 + local_y.ravel()
        transmittance, done, stop = np.ones(256, np.float32), np.zeros(256, bool), None
        offset, count = int(bins.tile_offsets[tile]), int(bins.tile_counts[tile])
        for j in range(count):
            g = int(bins.sorted_gaussian_ids[offset + j])
            dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
            power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
            alpha = np.minimum(conv.alpha_max, opacities[g] * np.exp(power))
            valid = (power <= 0) & (alpha >= conv.alpha_min) & ~done
            stops = transmittance * (1 - alpha) < conv.transmittance_min
            done |= valid & stops
            transmittance = np.where(valid & ~stops, transmittance * (1 - alpha), transmittance)
            if done.all():
                stop = j + 1
                break
        result.append((count, stop))
    return result


def _mosaic_vs_xla(features, tile_size=16):
    """Value, images and gradients of the Mosaic-layout kernels, the Triton-layout kernels (both interpreted) and the
    XLA path."""
    scene = [jnp.asarray(a) for a in _occluded_scene(200, 3, features)]
    viewmats, Ks = _cameras()
    viewmat, K = jnp.asarray(viewmats[0]), jnp.asarray(Ks[0])
    w_image, w_alpha = _weights((HEIGHT, WIDTH, features), 13), _weights((HEIGHT, WIDTH), 14)
    background = jnp.linspace(0.1, 0.4, features)
    results = {}
    for impl, backend in (("xla", None), ("pallas", None), ("pallas", "mosaic_tpu")):

        def loss(*gaussians, impl=impl, backend=backend):
            out = rasterize(
                *gaussians, viewmat, K, WIDTH, HEIGHT, background=background, impl=impl, interpret=True,
                pallas_backend=backend, tile_size=tile_size, capacity=8192,
            )  # fmt: skip
            value = jnp.sum(out.image[0] * w_image) + jnp.sum(out.alpha[0] * w_alpha) + 0.1 * jnp.sum(out.depth[0])
            return value, (out.image[0], out.alpha[0])

        results[backend or impl] = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(5)), has_aux=True))(*scene)
    return scene, results


def _assert_close(results, reference, rtol):
    ((value, (image, alpha)), grads), ((ref_value, (ref_image, ref_alpha)), ref_grads) = results, reference
    np.testing.assert_allclose(image, ref_image, atol=1e-5)
    np.testing.assert_allclose(alpha, ref_alpha, atol=1e-5)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for name, g, r in zip(("means", "quats", "scales", "opacities", "features"), grads, ref_grads):
        scale = float(jnp.max(jnp.abs(r)))
        assert scale > 0, name
        err = float(jnp.max(jnp.abs(g - r))) / scale
        assert err < rtol, f"{name}: relative error {err:.2e}"


def _assert_mosaic_matches(results):
    # The XLA path blends chunks with cumulative products (opacity gradients of saturated tiles differ by ~2e-5 at
    # 16-D); the Triton layout runs the same sequential float32 arithmetic as the Mosaic one.
    _assert_close(results["mosaic_tpu"], results["xla"], rtol=1e-4)
    _assert_close(results["mosaic_tpu"], results["pallas"], rtol=2e-6)


@pytest.mark.parametrize("features,tile_size", [(3, 16), (16, 16), (3, 8)])
def test_mosaic_layout_interpreted_matches_xla(features, tile_size):
    """The TPU kernels (slot chunks copied HBM -> SMEM, double buffered; gradients copied back per chunk; pixels as
    [P / 128, 128]) run in interpret mode: images, loss and gradients equal the XLA path and the Triton-layout
    kernels, for RGB and 16-D features and 8x8 tiles (64 lanes), with tiles that saturate early (so copies are still in
    flight and gradient chunks are part-written)."""
    scene, results = _mosaic_vs_xla(features, tile_size)
    if tile_size == 16:
        viewmats, Ks = _cameras()
        stops = _early_stops(scene, viewmats[0], Ks[0], get_convention("3dgs"))
        stopped = [(count, stop) for count, stop in stops if stop is not None]
        assert any(stop <= 32 < count for count, stop in stopped)  # stops in the first chunk, more chunks follow
        assert any(64 < stop < count for count, stop in stopped)  # stops mid-list after two chunks
        assert any(stop is None and count > 64 for count, stop in stops)  # runs to the end of a long list
    _assert_mosaic_matches(results)


@pytest.mark.slow
def test_mosaic_layout_dma_protocol_in_tpu_interpret_mode(monkeypatch):
    """The same kernels under Pallas' TPU interpret mode, which simulates HBM / SMEM, DMAs and semaphores: a copy's
    data lands only when it is waited for, and unwritten memory reads as NaN. A missing wait, a buffer reused before
    its copy finished, or a gradient slot left unwritten would show up as NaN or a wrong value."""
    from jax.experimental.pallas import tpu as pltpu

    from kernels.rasterize import composite_pallas

    monkeypatch.setattr(composite_pallas, "_mosaic_interpret", lambda cfg: pltpu.InterpretParams())
    try:
        _, results = _mosaic_vs_xla(3)
    finally:
        pltpu.reset_tpu_interpret_mode_state()
    _assert_mosaic_matches(results)
