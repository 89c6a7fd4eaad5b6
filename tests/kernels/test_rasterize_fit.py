"""End-to-end fit: optimise random Gaussians to photos textured on a cube, rendered analytically with known cameras.

Textures are real photos shipped in installed wheels (scikit-image astronaut/coffee/chelsea/rocket, scikit-learn
china/flower). Ground truth is ray-cast (2x2 supersampled) at 64x64 for 10 cameras on a ring around the cube; 8 train
and 2 held-out views.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kernels.rasterize import check_overflow, rasterize

sys.path.insert(0, os.path.dirname(__file__))
from test_rasterize_reference import intrinsics, look_at

SIZE = 64
TEXTURE = 64


def _textures() -> list[np.ndarray]:
    import skimage.data
    import skimage.transform
    from sklearn.datasets import load_sample_image

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              load_sample_image("china.jpg"), load_sample_image("flower.jpg")]  # fmt: skip
    return [skimage.transform.resize(p[..., :3], (TEXTURE, TEXTURE), anti_aliasing=True).astype(np.float32)
            for p in photos]  # fmt: skip


def _ray_cast_cube(viewmat, K, textures, supersample=2):
    """Image [SIZE, SIZE, 3] of the textured cube [-1, 1]^3 (black background) seen by one camera."""
    n = SIZE * supersample
    v, u = np.mgrid[0:n, 0:n]
    pix = np.stack([(u + 0.5) / supersample, (v + 0.5) / supersample, np.ones_like(u, float)], -1).reshape(-1, 3)
    rotation, translation = viewmat[:3, :3].astype(np.float64), viewmat[:3, 3].astype(np.float64)
    dirs = (np.linalg.inv(K.astype(np.float64)) @ pix.T).T @ rotation  # world directions
    origin = -rotation.T @ translation
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-1 - origin) / dirs, (1 - origin) / dirs
    t_near = np.max(np.minimum(t1, t2), axis=1)
    t_far = np.min(np.maximum(t1, t2), axis=1)
    hit = (t_near < t_far) & (t_far > 0)
    axis = np.argmax(np.minimum(t1, t2), axis=1)
    points = origin + t_near[:, None] * dirs
    image = np.zeros((len(pix), 3), np.float32)
    for face in range(6):
        ax, sign = face // 2, 1 if face % 2 else -1
        sel = hit & (axis == ax) & (np.sign(points[:, ax]) == sign)
        others = [a for a in range(3) if a != ax]
        uv = (np.clip(points[sel][:, others], -1, 1) + 1) / 2 * (TEXTURE - 1)
        x0, y0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        x1, y1 = np.minimum(x0 + 1, TEXTURE - 1), np.minimum(y0 + 1, TEXTURE - 1)
        fx, fy = (uv[:, 0] - x0)[:, None], (uv[:, 1] - y0)[:, None]
        tex = textures[face]
        image[sel] = (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x1] * fx * (1 - fy)
                      + tex[y1, x0] * (1 - fx) * fy + tex[y1, x1] * fx * fy)  # fmt: skip
    return image.reshape(n, n, 3).reshape(SIZE, supersample, SIZE, supersample, 3).mean(axis=(1, 3))


def _cameras(count=10):
    viewmats, Ks = [], []
    for i in range(count):
        angle = 2 * np.pi * i / count
        height = 1.8 if i % 2 else -1.2
        eye = [4.2 * np.cos(angle), height, 4.2 * np.sin(angle)]
        viewmats.append(look_at(eye, [0, 0, 0]))
        Ks.append(intrinsics(SIZE, SIZE, 60.0))
    return np.stack(viewmats), np.stack(Ks)


def _psnr(a, b):
    return float(-10 * jnp.log10(jnp.mean((a - b) ** 2)))


def test_fit_textured_cube_converges():
    """2000 Gaussians from a random init (uniform in the cube's bounding box, grey, isotropic), Adam, 160 steps of
    2 random train views each, "3dgs" convention, XLA path. Held-out (2 views) PSNR threshold: 18 dB. Measured:
    22.2 dB (23.1 dB with 3000 Gaussians / 300 steps); the constant mean-colour prediction scores 12.7 dB."""
    textures = _textures()
    viewmats, Ks = _cameras()
    targets = np.stack([_ray_cast_cube(viewmats[i], Ks[i], textures) for i in range(len(viewmats))])
    train, held_out = np.array([0, 1, 2, 3, 5, 6, 7, 8]), np.array([4, 9])
    rng = np.random.default_rng(0)
    n = 2000
    params = {
        "means": jnp.asarray(rng.uniform(-1.1, 1.1, (n, 3)), jnp.float32),
        "log_scales": jnp.full((n, 3), np.log(0.06), jnp.float32),
        "quats": jnp.asarray(np.tile([1.0, 0, 0, 0], (n, 1)), jnp.float32),
        "opacity_logits": jnp.zeros((n,), jnp.float32),
        "colors": jnp.full((n, 3), 0.5, jnp.float32),
    }
    capacity = 32_768

    def render(p, vm, K):
        return rasterize(p["means"], p["quats"], jnp.exp(p["log_scales"]), jax.nn.sigmoid(p["opacity_logits"]),
                         p["colors"], vm, K, SIZE, SIZE, capacity=capacity)  # fmt: skip

    def loss_fn(p, vm, K, target):
        out = render(p, vm, K)
        return jnp.mean(jnp.abs(out.image - target)) + 0.5 * jnp.mean((out.image - target) ** 2), out.overflow

    schedule = {"means": 2e-3, "log_scales": 1e-2, "quats": 5e-3, "opacity_logits": 5e-2, "colors": 2e-2}
    optimizer = optax.multi_transform({k: optax.adam(lr) for k, lr in schedule.items()}, {k: k for k in params})
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, vm, K, target):
        (loss, overflow), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, vm, K, target)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, overflow

    any_overflow = False
    for it in range(160):
        views = rng.choice(train, 2, replace=False)
        params, state, _, overflow = step(params, state, viewmats[views], Ks[views], targets[views])
        any_overflow |= bool(jnp.any(overflow))
    assert not any_overflow
    out = jax.jit(render)(params, viewmats[held_out], Ks[held_out])
    check_overflow(out, capacity)
    psnr = _psnr(out.image, targets[held_out])
    baseline = _psnr(jnp.broadcast_to(targets[train].mean(axis=(0, 1, 2)), targets[held_out].shape), targets[held_out])
    print(f"held-out PSNR {psnr:.2f} dB (constant-colour baseline {baseline:.2f} dB)")
    assert psnr > 18.0
