"""Naive reference compositors and scene builders shared by the rasterizer tests, plus checks of the references.

`naive_composite` (numpy, float64, per-Gaussian loop over all pixels) is the forward oracle; `dense_composite_jnp`
(the same loop as a `lax.scan`) is the gradient oracle through autodiff.
"""

from __future__ import annotations

import numpy as np


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV axes: x right, y down, z forward) looking from eye at target."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat.astype(np.float32)


def intrinsics(width: int, height: int, focal: float) -> np.ndarray:
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32)


def random_scene(n: int, seed: int = 0, *, spread: float = 1.0, scale: float = 0.08, channels: int = 3):
    """Random Gaussians around the origin: means, quats, scales, opacities, features."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-spread, spread, (n, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    scales = (scale * np.exp(rng.normal(0, 0.4, (n, 3)))).astype(np.float32)
    opacities = rng.uniform(0.05, 0.99, n).astype(np.float32)
    features = rng.uniform(0, 1, (n, channels)).astype(np.float32)
    return means, quats, scales, opacities, features


def naive_composite(
    means2d,
    conics,
    opacities,
    values,
    depths,
    radii,
    width,
    height,
    background,
    *,
    alpha_max,
    alpha_min=1 / 255,
    t_min=1e-4,
    stop_inclusive=False,
    tile_rects=None,
    tile_size=16,
):
    """Per-pixel loop over all visible Gaussians sorted by depth (float64); returns (values [H,W,V], alpha [H,W]).

    tile_rects: optional (lo, hi) int [N, 2] tile boxes; a Gaussian then only reaches pixels of the tiles in its box
    (the tiled rasterizers' semantics: graphdeco's 3-sigma box truncates Gaussians whose alpha is still >= 1/255).
    """
    means2d, conics, opacities, values, depths = (
        np.asarray(a, np.float64) for a in (means2d, conics, opacities, values, depths)
    )
    visible = np.all(np.asarray(radii) > 0, axis=-1)
    order = [i for i in np.argsort(depths, kind="stable") if visible[i]]
    ys, xs = np.mgrid[0:height, 0:width]
    px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
    transmittance = np.ones(px.shape)
    done = np.zeros(px.shape, bool)
    acc = np.zeros(px.shape + (values.shape[1],))
    for i in order:
        dx, dy = means2d[i, 0] - px, means2d[i, 1] - py
        a, b, c = conics[i]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = np.minimum(alpha_max, opacities[i] * np.exp(power))
        ok = (power <= 0) & (alpha >= alpha_min) & ~done
        if tile_rects is not None:
            lo, hi = np.asarray(tile_rects[0])[i], np.asarray(tile_rects[1])[i]
            tx, ty = (px // tile_size).astype(int), (py // tile_size).astype(int)
            ok &= (tx >= lo[0]) & (tx < hi[0]) & (ty >= lo[1]) & (ty < hi[1])
        next_t = transmittance * (1 - alpha)
        stop = (next_t <= t_min) if stop_inclusive else (next_t < t_min)
        done |= ok & stop
        use = ok & ~stop
        acc[use] += (alpha[use] * transmittance[use])[:, None] * values[i]
        transmittance = np.where(use, next_t, transmittance)
    out = acc + transmittance[:, None] * np.asarray(background, np.float64)
    return out.reshape(height, width, -1), (1 - transmittance).reshape(height, width)


def dense_composite_jnp(
    means2d, conics, opacities, values, depths, radii, tile_rects, width, height, background, convention, tile_size=16
):
    """Differentiable dense reference: `lax.scan` over all depth-sorted Gaussians, every pixel at once (jnp).

    Same semantics as `naive_composite` (tile-box restricted); autodiff through it is the gradient oracle.
    Returns (values [H, W, V] with background, alpha [H, W]).
    """
    import jax
    import jax.numpy as jnp

    ys, xs = jnp.mgrid[0:height, 0:width]
    px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
    tx, ty = (xs.ravel() // tile_size), (ys.ravel() // tile_size)
    lo, hi = tile_rects
    visible = jnp.all(radii > 0, axis=-1)
    order = jnp.argsort(jnp.where(visible, jax.lax.stop_gradient(depths), jnp.inf), stable=True)

    def step(state, i):
        transmittance, done, acc = state
        dx, dy = means2d[i, 0] - px, means2d[i, 1] - py
        a, b, c = conics[i, 0], conics[i, 1], conics[i, 2]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = jnp.minimum(convention.alpha_max, opacities[i] * jnp.exp(power))
        in_box = (tx >= lo[i, 0]) & (tx < hi[i, 0]) & (ty >= lo[i, 1]) & (ty < hi[i, 1]) & visible[i]
        ok = (power <= 0) & (alpha >= convention.alpha_min) & ~done & in_box
        next_t = transmittance * (1 - alpha)
        t_min = convention.transmittance_min
        stop = (next_t <= t_min) if convention.stop_inclusive else (next_t < t_min)
        use = ok & ~stop
        acc = acc + jnp.where(use, alpha * transmittance, 0.0)[:, None] * values[i]
        return (jnp.where(use, next_t, transmittance), done | (ok & stop), acc), None

    init = (
        jnp.ones(px.shape, values.dtype),
        jnp.zeros(px.shape, bool),
        jnp.zeros(px.shape + values.shape[1:], values.dtype),
    )
    (transmittance, _, acc), _ = jax.lax.scan(step, init, order)
    out = acc + transmittance[:, None] * background
    return out.reshape(height, width, -1), (1 - transmittance).reshape(height, width)


def test_naive_reference_single_gaussian():
    """One Gaussian: the centre pixel gets alpha = min(alpha_max, opacity) and colour = alpha * c + (1 - alpha) * bg;
    a second, farther Gaussian behind an opaque one is blocked by the transmittance stop."""
    means2d = np.array([[8.5, 8.5], [8.5, 8.5]])
    conics = np.array([[0.5, 0.0, 0.5], [0.5, 0.0, 0.5]])
    radii = np.array([[5, 5], [5, 5]])
    values = np.array([[1.0, 0.0], [0.0, 1.0]])
    image, alpha = naive_composite(means2d, conics, np.array([0.6, 1.0]), values, np.array([1.0, 2.0]), radii, 16, 16,
                                   np.array([0.2, 0.2]), alpha_max=0.99)  # fmt: skip
    a1 = 0.6
    a2 = 0.99
    np.testing.assert_allclose(alpha[8, 8], 1 - (1 - a1) * (1 - a2))
    np.testing.assert_allclose(image[8, 8], [a1 + (1 - a1) * (1 - a2) * 0.2, (1 - a1) * a2 + (1 - a1) * (1 - a2) * 0.2])
    for alpha_max, expected in ((0.999, [0.999, 0.0]), (0.99999, [0.0, 0.0])):
        # 0.999: the second Gaussian would bring T to 1e-6 < 1e-4, so it is not added; 0.99999: not even the first.
        blocked, _ = naive_composite(means2d, conics, np.array([1.0, 1.0]), values, np.array([1.0, 2.0]), radii, 16,
                                     16, np.array([0.0, 0.0]), alpha_max=alpha_max)  # fmt: skip
        np.testing.assert_allclose(blocked[8, 8], expected, atol=1e-12)
