"""Multi-head attention behind one dispatcher.

Layout: q [batch, seq_q, heads, head_dim], k and v [batch, seq_k, heads, head_dim].
`bias` is additive and broadcastable to [batch, heads, seq_q, seq_k]; `mask` is boolean, broadcastable to the same
shape, True where a query may attend to a key. Rows with no key to attend to (fully masked) produce zeros, in the
forward and the backward pass, on every path.

Paths: `impl="xla"` is plain jnp (f32 softmax over materialised logits, the reference); `impl="xla_chunked"` is
jnp too, but streams the keys in chunks with an online softmax (flash-style: a running row maximum, denominator and
f32 output accumulator, one `lax.scan` step per chunk), so the [seq_q, seq_k] logits never exist at once and each
chunk's logits stay in cache; `impl="pallas"` is the flash-attention kernel in `kernels.flash_attention` (Triton on
GPU, Mosaic on TPU, `interpret=True` on CPU). `impl="auto"` picks Pallas on GPU/TPU; on CPU it picks the chunked path
for long key sequences (`use_chunked`: at least `CHUNKED_MIN_KEYS` keys and `CHUNKED_MIN_LOGITS` logits per batch
and head; e.g. SAM2 memory attention, 1024 queries over ~9k memory tokens, runs 2x faster) and otherwise
`impl="xla_grouped"`: the plain computation on a few (batch, head) pairs at a time (`lax.map` over groups of about
`GROUP_LOGITS` logits), each group a plain 3-D matmul / softmax / matmul whose logits stay in cache, normalised after
the PV product. XLA:CPU runs a batched [B, H] einsum far below its 2-D matmul speed and streams the B H Q K logits
through memory between the ops; grouped, SAMWISE's HSA (16 x 8 heads x 512^2 tokens) runs 8x faster on 2 cores and
no measured shape is slower (benchmarks/results/samwise_official.md). All XLA paths give the same result up to float
rounding (the chunked and grouped ones sum or normalise in another order).
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


# impl="auto" on CPU streams the keys (`attention_xla_chunked`) from this many keys and this many logits per batch and
# head on; below, the materialised logits are small enough that the plain path is as fast (measured on 2 CPU cores,
# head_dim 16-256: chunking breaks even around 2k keys x 1k queries and wins 2x at 9k keys).
CHUNKED_MIN_KEYS = 2048
CHUNKED_MIN_LOGITS = 1 << 21
# Keys per online-softmax step: [seq_q, 512] f32 logits per (batch, head) are 2 MiB at 1k queries, which stays in cache.
KEY_CHUNK = 512


def _key_chunks(x, num_keys: int, num_chunks: int, chunk: int, pad_value):
    """A rank-4 bias/mask [..., seq_k or 1] as scan inputs [num_chunks, ..., chunk] (padded keys get `pad_value`), or
    None for x None; an x broadcast along keys (last dim 1) is returned as is, the same for every chunk."""
    if x is None or x.shape[-1] == 1:
        return x
    pad = num_chunks * chunk - num_keys
    if pad:
        x = jnp.pad(x, [(0, 0)] * 3 + [(0, pad)], constant_values=pad_value)
    return jnp.moveaxis(x.reshape(*x.shape[:-1], num_chunks, chunk), -2, 0)


def attention_xla_chunked(q, k, v, *, bias=None, mask=None, scale=None, key_chunk: int = KEY_CHUNK):
    """Attention with an online softmax over chunks of `key_chunk` keys (flash-style, plain jnp; see module doc).

    Same layout, arguments and result as `attention_xla` (fully masked rows give zeros); the scan is differentiated
    by JAX (the running maxima carry no gradient: the shift cancels), so the backward pass keeps one chunk of
    probabilities per step, as much as the plain path keeps in all.
    """
    check_inputs(q, k, v, bias, mask)
    if key_chunk < 1:
        raise ValueError(f"key_chunk must be a positive number of keys; got {key_chunk}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, num_queries, heads, head_dim = q.shape
    num_keys = k.shape[1]
    num_chunks = -(-num_keys // key_chunk)
    if num_chunks == 1:
        return attention_xla(q, k, v, bias=bias, mask=mask, scale=scale)
    pad = num_chunks * key_chunk - num_keys
    bias = None if bias is None else bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    mask = None if mask is None else mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if pad:  # padded keys must not be attended to: give them a mask when there is none along keys
        if mask is None:
            mask = jnp.ones((1, 1, 1, num_keys), bool)
        elif mask.shape[-1] == 1:
            mask = jnp.broadcast_to(mask, (*mask.shape[:-1], num_keys))
        k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (k, v))
    guarded = bias is not None or mask is not None  # rows may have no finite logit in a chunk, or in all

    def chunked(x):  # [B, K, H, D] -> [num_chunks, B, H, key_chunk, D]
        return jnp.moveaxis(x.reshape(batch, num_chunks, key_chunk, heads, head_dim), 1, 0).transpose(0, 1, 3, 2, 4)

    bias_chunks = _key_chunks(bias, num_keys, num_chunks, key_chunk, 0.0)
    mask_chunks = _key_chunks(mask, num_keys, num_chunks, key_chunk, False)
    scanned = {"k": chunked(k), "v": chunked(v)}
    if bias_chunks is not None and bias_chunks.ndim == 5:
        scanned["bias"] = bias_chunks
    if mask_chunks is not None and mask_chunks.ndim == 5:
        scanned["mask"] = mask_chunks
    q_bhqd = q.transpose(0, 2, 1, 3)

    def step(carry, xs):
        row_max, denom, acc = carry
        logits = jnp.einsum("bhqd,bhkd->bhqk", q_bhqd, xs["k"], preferred_element_type=jnp.float32) * scale
        chunk_bias = xs.get("bias", bias_chunks)
        if chunk_bias is not None:
            logits = logits + chunk_bias.astype(jnp.float32)
        chunk_mask = xs.get("mask", mask_chunks)
        if chunk_mask is not None:
            logits = jnp.where(chunk_mask, logits, -jnp.inf)
        new_max = jnp.maximum(row_max, jax.lax.stop_gradient(jnp.max(logits, axis=-1)))
        # Rows with no finite logit so far (max -inf) shift by 0: their weights are exp(-inf) = 0, not NaN.
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0) if guarded else new_max
        weights = jnp.exp(logits - shift[..., None])
        rescale = jnp.exp(row_max - shift)  # 0 on the first chunk (row_max -inf)
        denom = denom * rescale + jnp.sum(weights, axis=-1)
        update = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), xs["v"], preferred_element_type=jnp.float32)
        return (new_max, denom, acc * rescale[..., None] + update), None

    init = (
        jnp.full((batch, heads, num_queries), -jnp.inf, jnp.float32),
        jnp.zeros((batch, heads, num_queries), jnp.float32),
        jnp.zeros((batch, heads, num_queries, head_dim), jnp.float32),
    )
    (_, denom, acc), _ = jax.lax.scan(step, init, scanned)
    if guarded:  # fully masked rows: denominator 0, accumulator 0 -> output 0
        denom = jnp.where(denom == 0, 1.0, denom)
    out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    return (acc / denom[..., None]).transpose(0, 2, 1, 3).astype(out_dtype)


# impl="xla_grouped": logits per `lax.map` step (1 MiB of f32 per group of (batch, head) pairs, which stays in cache).
GROUP_LOGITS = 1 << 18


def _group_size(pairs: int, logits_per_pair: int, group_logits: int) -> int:
    """The largest divisor of `pairs` with at most `group_logits` logits per group (at least 1 pair)."""
    target = max(1, group_logits // max(logits_per_pair, 1))
    return max(d for d in range(1, min(pairs, target) + 1) if pairs % d == 0)


def attention_xla_grouped(q, k, v, *, bias=None, mask=None, scale=None, group_logits: int = GROUP_LOGITS):
    """The plain path's computation, one group of (batch, head) pairs at a time (see the module docstring).

    Same layout, arguments and result as `attention_xla` (fully masked rows give zeros). A bias or mask is broadcast
    over batch and heads (not over queries or keys) and split into the same groups. The output is normalised after
    the PV product (the denominators divide [Q, D] instead of the [Q, K] weights). Differentiable (`lax.map` is a
    scan); the backward pass keeps one group's probabilities per step, as much as the plain path keeps in all.
    """
    check_inputs(q, k, v, bias, mask)
    if group_logits < 1:
        raise ValueError(f"group_logits must be a positive number of logits; got {group_logits}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, num_queries, heads, head_dim = q.shape
    num_keys = k.shape[1]
    pairs = batch * heads
    size = _group_size(pairs, num_queries * num_keys, group_logits)

    def grouped(x):  # [B, N, H, D] -> [pairs / size, size, N, D]
        return x.transpose(0, 2, 1, 3).reshape(pairs // size, size, x.shape[1], x.shape[3])

    def grouped_extra(x):  # broadcastable to [B, H, Q, K] -> [pairs / size, size, Q or 1, K or 1]
        x = x.reshape((1,) * (4 - x.ndim) + x.shape)
        x = jnp.broadcast_to(x, (batch, heads, *x.shape[2:]))
        return x.reshape(pairs // size, size, *x.shape[2:])

    inputs = {"q": grouped(q), "k": grouped(k), "v": grouped(v)}
    if bias is not None:
        inputs["bias"] = grouped_extra(bias)
    if mask is not None:
        inputs["mask"] = grouped_extra(mask)
    guarded = bias is not None or mask is not None

    def step(xs):
        logits = jnp.einsum("nqd,nkd->nqk", xs["q"], xs["k"], preferred_element_type=jnp.float32) * scale
        if "bias" in xs:
            logits = logits + xs["bias"].astype(jnp.float32)
        if "mask" in xs:
            logits = jnp.where(xs["mask"], logits, -jnp.inf)
        row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
        if guarded:  # fully masked rows (max -inf) shift by 0: weights exp(-inf) = 0, denominator 0 -> output 0
            row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
        weights = jnp.exp(logits - row_max)
        denom = jnp.sum(weights, axis=-1, keepdims=True)
        if guarded:
            denom = jnp.where(denom == 0, 1.0, denom)
        out = jnp.einsum("nqk,nkd->nqd", weights.astype(v.dtype), xs["v"], preferred_element_type=jnp.float32)
        return out / denom

    if pairs == size:
        out = step({name: x[0] for name, x in inputs.items()})[None]
    else:
        out = jax.lax.map(step, inputs)
    out_dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    return out.reshape(batch, heads, num_queries, head_dim).transpose(0, 2, 1, 3).astype(out_dtype)


def use_chunked(num_queries: int, num_keys: int) -> bool:
    """Whether `impl="auto"` runs the chunked online-softmax path on CPU for these sequence lengths."""
    return num_keys >= CHUNKED_MIN_KEYS and num_queries * num_keys >= CHUNKED_MIN_LOGITS


def attention(q, k, v, *, bias=None, mask=None, scale: float | None = None, impl: str = "auto"):
    """Scaled dot-product attention, softmax(q k^T * scale + bias, masked) v.

    Args:
      q: [batch, seq_q, heads, head_dim] float array.
      k, v: [batch, seq_k, heads, head_dim], same dtype family as q.
      bias: optional additive float array broadcastable to [batch, heads, seq_q, seq_k] (differentiable; its gradient
        is reduced over the dims it was broadcast along).
      mask: optional boolean array broadcastable to [batch, heads, seq_q, seq_k]; True = may attend.
      scale: logit scale, default head_dim ** -0.5 (a Python float).
      impl: "auto" (Pallas on GPU/TPU; on CPU the chunked XLA path for long keys, see `use_chunked`, else the grouped
        one), "xla" (plain, materialised logits), "xla_chunked" (online softmax over key chunks), "xla_grouped" (the
        plain computation per group of (batch, head) pairs) or "pallas" (interpret mode on CPU).

    Returns:
      [batch, seq_q, heads, head_dim] in the inputs' dtype.
    """
    if impl not in ("auto", "xla", "xla_chunked", "xla_grouped", "pallas"):
        raise ValueError(f"impl must be 'auto', 'xla', 'xla_chunked', 'xla_grouped' or 'pallas'; got {impl!r}")
    if impl == "pallas" or (impl == "auto" and jax.default_backend() in ("gpu", "tpu")):
        from kernels.flash_attention import attention_pallas

        return attention_pallas(q, k, v, bias=bias, mask=mask, scale=scale)
    if impl == "xla_chunked" or (
        impl == "auto"
        and getattr(k, "ndim", 0) == 4
        and getattr(q, "ndim", 0) == 4
        and use_chunked(q.shape[1], k.shape[1])
    ):
        return attention_xla_chunked(q, k, v, bias=bias, mask=mask, scale=scale)
    if impl == "xla":
        return attention_xla(q, k, v, bias=bias, mask=mask, scale=scale)
    return attention_xla_grouped(q, k, v, bias=bias, mask=mask, scale=scale)
