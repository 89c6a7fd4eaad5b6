"""Multi-head attention behind one dispatcher.

Layout: q [batch, seq_q, heads, head_dim], k and v [batch, seq_k, heads, head_dim].
`bias` is additive and broadcastable to [batch, heads, seq_q, seq_k]; `mask` is boolean, broadcastable to the same
shape, True where a query may attend to a key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_inputs(q, k, v, bias, mask):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"attention expects q, k, v of rank 4 [batch, seq, heads, head_dim]; got shapes {q.shape}, {k.shape}, {v.shape}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {k.shape} and {v.shape}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q {q.shape} and k {k.shape} must agree on batch, heads and head_dim ([batch, seq, heads, head_dim])"
        )
    target = (q.shape[0], q.shape[2], q.shape[1], k.shape[1])
    for name, extra in (("bias", bias), ("mask", mask)):
        if extra is None:
            continue
        try:
            jnp.broadcast_shapes(extra.shape, target)
        except ValueError:
            raise ValueError(
                f"{name} of shape {extra.shape} does not broadcast to [batch, heads, seq_q, seq_k] = {target}"
            ) from None


def attention_xla(q, k, v, *, bias=None, mask=None, scale=None):
    """Plain-jnp attention in f32 softmax; the reference and CPU path."""
    _check_inputs(q, k, v, bias, mask)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(logits - row_max)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    weights = weights / jnp.where(denom == 0, 1.0, denom)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


def attention(q, k, v, *, bias=None, mask=None, scale=None, impl: str = "auto"):
    """Scaled dot-product attention; `impl` is "auto", "xla" or "pallas"."""
    if impl not in ("auto", "xla", "pallas"):
        raise ValueError(f"impl must be 'auto', 'xla' or 'pallas'; got {impl!r}")
    if impl == "pallas" or (impl == "auto" and jax.default_backend() in ("gpu", "tpu")):
        try:
            from kernels import flash_attention  # noqa: F401  (added by the Pallas kernel work)
        except ImportError:
            if impl == "pallas":
                raise
        else:
            return flash_attention.attention_pallas(q, k, v, bias=bias, mask=mask, scale=scale)
    return attention_xla(q, k, v, bias=bias, mask=mask, scale=scale)
