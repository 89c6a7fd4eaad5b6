"""Multi-head attention behind one dispatcher.

Layout: q [batch, seq_q, heads, head_dim], k and v [batch, seq_k, heads, head_dim].
`bias` is additive and broadcastable to [batch, heads, seq_q, seq_k]; `mask` is boolean, broadcastable to the same
shape, True where a query may attend to a key. Rows with no key to attend to (fully masked) produce zeros, in the
forward and the backward pass, on every path.

Paths: `impl="xla"` is plain jnp (f32 softmax); `impl="pallas"` is the flash-attention kernel in
`kernels.flash_attention` (Triton on GPU, Mosaic on TPU, `interpret=True` on CPU); `impl="auto"` picks Pallas on
GPU/TPU and XLA on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_FLOAT_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def check_inputs(q, k, v, bias=None, mask=None) -> None:
    """Raises a ValueError/TypeError naming the problem when q, k, v, bias or mask do not fit the layout."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(
                f"attention expects q, k, v of rank 4 [batch, seq, heads, head_dim]; got {name} of shape "
                f"{getattr(x, 'shape', None)} (q {getattr(q, 'shape', None)}, k {getattr(k, 'shape', None)}, "
                f"v {getattr(v, 'shape', None)})"
            )
        if jnp.dtype(x.dtype) not in _FLOAT_DTYPES:
            raise TypeError(f"attention supports float32, bfloat16 and float16 inputs; got {name} of dtype {x.dtype}")
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
        if name == "mask" and jnp.dtype(extra.dtype) != jnp.dtype(bool):
            raise TypeError(f"mask must be boolean (True = may attend); got dtype {extra.dtype}")
        if name == "bias" and not jnp.issubdtype(extra.dtype, jnp.floating):
            raise TypeError(f"bias must be a floating-point array; got dtype {extra.dtype}")
        if extra.ndim > 4:
            raise ValueError(f"{name} of shape {extra.shape} has rank > 4; expected [batch, heads, seq_q, seq_k]")
        # Broadcasting must not change the target shape: a bias with a larger dim is an error too.
        try:
            ok = jnp.broadcast_shapes(extra.shape, target) == target
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} of shape {extra.shape} does not broadcast to [batch, heads, seq_q, seq_k] = {target}"
            )


def attention_xla(q, k, v, *, bias=None, mask=None, scale=None):
    """Plain-jnp attention with an f32 softmax; the reference and the CPU path."""
    check_inputs(q, k, v, bias, mask)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    # The shift cancels in the softmax, so it carries no gradient.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    if bias is None and mask is None:
        # Every row has a finite maximum: skip the guards below (they cost ~1.7x on CPU at 4k tokens).
        weights = jnp.exp(logits - row_max)
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    else:
        # Fully masked rows (max = -inf, from the mask or a -inf bias) shift by 0 and give zeros, not NaN.
        row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
        weights = jnp.exp(logits - row_max)
        denom = jnp.sum(weights, axis=-1, keepdims=True)
        weights = weights / jnp.where(denom == 0, 1.0, denom)
    out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v).astype(out_dtype)


def attention(q, k, v, *, bias=None, mask=None, scale: float | None = None, impl: str = "auto"):
    """Scaled dot-product attention, softmax(q k^T * scale + bias, masked) v.

    Args:
      q: [batch, seq_q, heads, head_dim] float array.
      k, v: [batch, seq_k, heads, head_dim], same dtype family as q.
      bias: optional additive float array broadcastable to [batch, heads, seq_q, seq_k] (differentiable; its gradient
        is reduced over the dims it was broadcast along).
      mask: optional boolean array broadcastable to [batch, heads, seq_q, seq_k]; True = may attend.
      scale: logit scale, default head_dim ** -0.5 (a Python float).
      impl: "auto" (Pallas on GPU/TPU, XLA on CPU), "xla", or "pallas" (interpret mode on CPU).

    Returns:
      [batch, seq_q, heads, head_dim] in the inputs' dtype.
    """
    if impl not in ("auto", "xla", "pallas"):
        raise ValueError(f"impl must be 'auto', 'xla' or 'pallas'; got {impl!r}")
    if impl == "pallas" or (impl == "auto" and jax.default_backend() in ("gpu", "tpu")):
        from kernels.flash_attention import attention_pallas

        return attention_pallas(q, k, v, bias=bias, mask=mask, scale=scale)
    return attention_xla(q, k, v, bias=bias, mask=mask, scale=scale)
