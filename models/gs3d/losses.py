"""Photometric losses and metrics of 3DGS: L1, SSIM (graphdeco's 11x11 Gaussian window), D-SSIM, PSNR.

Images are [H, W, C] floats in [0, 1]. `valid` [H, W] (1 real pixel, 0 padding) restricts every mean to the real
pixels of a view padded to a larger canvas; SSIM's window still sees the zero padding at the image border, like the
zero-padded convolution graphdeco's `ssim` uses at every border.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> jax.Array:
    x = jnp.arange(size, dtype=jnp.float32) - size // 2
    g = jnp.exp(-(x**2) / (2.0 * sigma**2))
    return g / jnp.sum(g)


def _blur(x_hwc: jax.Array, window: jax.Array) -> jax.Array:
    """Separable zero-padded 'same' Gaussian filter of every channel (graphdeco: conv2d, padding = size // 2)."""
    size = window.shape[0]
    x = jnp.transpose(x_hwc, (2, 0, 1))[:, None]  # [C, 1, H, W]
    pad = size // 2
    x = jax.lax.conv_general_dilated(x, window.reshape(1, 1, size, 1), (1, 1), ((pad, pad), (0, 0)))
    x = jax.lax.conv_general_dilated(x, window.reshape(1, 1, 1, size), (1, 1), ((0, 0), (pad, pad)))
    return jnp.transpose(x[:, 0], (1, 2, 0))


def ssim_map(image: jax.Array, target: jax.Array) -> jax.Array:
    """Per-pixel, per-channel SSIM [H, W, C] (graphdeco `_ssim`: 11x11 Gaussian window, sigma 1.5)."""
    window = _gaussian_window()
    image, target = image.astype(jnp.float32), target.astype(jnp.float32)
    mu_x, mu_y = _blur(image, window), _blur(target, window)
    sigma_x = _blur(image * image, window) - mu_x**2
    sigma_y = _blur(target * target, window) - mu_y**2
    sigma_xy = _blur(image * target, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def _masked_mean(x_hwc: jax.Array, valid: jax.Array | None) -> jax.Array:
    if valid is None:
        return jnp.mean(x_hwc)
    weight = valid[..., None].astype(jnp.float32)
    return jnp.sum(x_hwc * weight) / jnp.maximum(jnp.sum(weight) * x_hwc.shape[-1], 1.0)


def ssim(image: jax.Array, target: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Mean SSIM over the (valid) pixels and channels."""
    return _masked_mean(ssim_map(image, target), valid)


def l1(image: jax.Array, target: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Mean absolute error over the (valid) pixels and channels."""
    return _masked_mean(jnp.abs(image.astype(jnp.float32) - target.astype(jnp.float32)), valid)


def psnr(image: jax.Array, target: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """PSNR in dB for images in [0, 1] (graphdeco: 20 log10(1 / sqrt(MSE)))."""
    mse = _masked_mean(jnp.square(image.astype(jnp.float32) - target.astype(jnp.float32)), valid)
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def photometric_loss(
    image: jax.Array, target: jax.Array, valid: jax.Array | None = None, lambda_dssim: float = 0.2
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """3DGS loss (1 - lambda) L1 + lambda (1 - SSIM) and its terms."""
    l1_term = l1(image, target, valid)
    ssim_term = ssim(image, target, valid)
    loss = (1.0 - lambda_dssim) * l1_term + lambda_dssim * (1.0 - ssim_term)
    return loss, {"l1": l1_term, "ssim": ssim_term}
