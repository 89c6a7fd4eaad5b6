"""models.layers: the torch-exact LayerNorm (forward, closed-form backward, dtypes, errors) against torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.layers import LayerNorm, layer_norm

EPS32 = float(np.finfo(np.float32).eps)


def _torch_layer_norm(x, weight, bias, eps, cotangent):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    norm = torch.nn.LayerNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(weight))
        norm.bias.copy_(torch.tensor(bias))
    y = norm(xt)
    (y * torch.tensor(cotangent)).sum().backward()
    return (y.detach().numpy(), xt.grad.numpy(), norm.weight.grad.numpy(), norm.bias.grad.numpy())


@pytest.mark.parametrize("mean", [0.0, 40.0], ids=["centred", "large-mean"])
def test_layer_norm_matches_torch_forward_and_backward(mean):
    rng = np.random.default_rng(0)
    channels = 96
    x = rng.normal(mean, 2.0, size=(3, 7, channels)).astype(np.float32)
    weight = rng.normal(size=channels).astype(np.float32)
    bias = rng.normal(size=channels).astype(np.float32)
    cotangent = rng.normal(size=x.shape).astype(np.float32)
    y_ref, dx_ref, dw_ref, db_ref = _torch_layer_norm(x, weight, bias, 1e-6, cotangent)

    norm = layer_norm(channels, eps=1e-6, rngs=nnx.Rngs(0))
    norm.scale[...] = jnp.asarray(weight)
    norm.bias[...] = jnp.asarray(bias)

    def loss(module, x):
        return (module(x) * cotangent).sum()

    y = np.asarray(norm(jnp.asarray(x)))
    grads_module, dx = nnx.grad(loss, argnums=(0, 1))(norm, jnp.asarray(x))
    # Centring loses digits in proportion to max|x| / std (the rounding of x relative to its spread).
    spread = float(np.abs(x).max() / x.std(-1).min())
    # Each output is a handful of float32 operations on normalised values; each gradient entry sums `channels`
    # (dx, per row) or 21 (dscale, dbias, over rows) products: bounds scale with the magnitude and the sum length.
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=16 * EPS32 * np.abs(y_ref).max() * spread)
    dx_bound = 16 * EPS32 * np.sqrt(channels) * np.abs(dx_ref).max() * spread
    np.testing.assert_allclose(np.asarray(dx), dx_ref, rtol=0, atol=dx_bound)
    rows = x.shape[0] * x.shape[1]
    for ours, ref in ((grads_module["scale"][...], dw_ref), (grads_module["bias"][...], db_ref)):
        np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=16 * EPS32 * np.sqrt(rows) * np.abs(ref).max())


def test_layer_norm_closed_form_backward_matches_autodiff():
    """The custom backward against autodiff of the same two-pass forward (no custom rule), float64 off."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5, 32)).astype(np.float32))
    scale = jnp.asarray(rng.normal(size=32).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=32).astype(np.float32))
    cotangent = jnp.asarray(rng.normal(size=(5, 32)).astype(np.float32))

    def plain(x, scale, bias):
        centred = x - x.mean(-1, keepdims=True)
        return centred * jax.lax.rsqrt(jnp.mean(centred**2, -1, keepdims=True) + 1e-5) * scale + bias

    from models.layers import layer_norm_fn

    ours = jax.grad(lambda *a: (layer_norm_fn(*a, 1e-5) * cotangent).sum(), argnums=(0, 1, 2))(x, scale, bias)
    ref = jax.grad(lambda *a: (plain(*a) * cotangent).sum(), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                   atol=16 * EPS32 * np.sqrt(32) * float(jnp.abs(b).max()))


def test_layer_norm_dtypes_and_options():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16)), jnp.bfloat16)
    norm = LayerNorm(16, epsilon=1e-6)
    assert norm(x).dtype == jnp.float32  # promoted with the float32 parameters, as nnx.LayerNorm
    assert LayerNorm(16, dtype=jnp.bfloat16)(x).dtype == jnp.bfloat16
    assert jax.grad(lambda x: norm(x).astype(jnp.float32).sum())(x).dtype == jnp.bfloat16
    no_bias = LayerNorm(16, use_bias=False)
    assert no_bias.bias is None and no_bias(x.astype(jnp.float32)).shape == (2, 16)
    assert [path for path, _ in nnx.state(no_bias, nnx.Param).flat_state()] == [("scale",)]
    with pytest.raises(ValueError, match="16 channels"):
        norm(jnp.zeros((2, 8)))
