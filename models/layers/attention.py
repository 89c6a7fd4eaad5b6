"""Multi-head attention: projections, optional q/k norm and RoPE hook, `kernels.attention`, output projection.

One module for the zoo's attentions:
- fused self-attention (`qkv` Linear, ViT / CLIP / Hiera / FcaFormer) or separate `q_proj` / `k_proj` / `v_proj`
  (cross-attention with another key width, SAM2's heads and memory attention; `inner_dim` < `dim` downsamples);
- `qk_norm`: a LayerNorm over each head's channels of q and k (`q_norm`, `k_norm`);
- `rope(q, k) -> (q, k)`: a hook given the [B, N, heads, head_dim] tensors before the product (rotary encodings);
- `bias` / `mask` go to `kernels.attention` as they are (relative position bias, padding, key masks).
Callers that must change q, k or v in between (query pooling, extra keys) use `project` and `attend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import kernels
from models.layers.drop import Dropout
from models.layers.norm import layer_norm
from models.layers.sharding import SPEC_COLUMN_PARALLEL, SPEC_ROW_PARALLEL, partitioned, trunc_normal_002, zeros

Init = Callable[..., jax.Array]
RopeHook = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# The materialising XLA path holds [B, H, Nq, Nk] f32 logits; past this many per (batch, head) it runs in query
# chunks, which stay in cache on CPU (about half the time for a 4096-token Hiera block). Softmax is per query row,
# so chunking does not change the result.
XLA_CHUNK_LOGITS = 1 << 21
XLA_QUERY_CHUNK = 512


def _uses_xla(impl: str) -> bool:
    return impl == "xla" or (impl == "auto" and jax.default_backend() not in ("gpu", "tpu"))


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
                      mask: jax.Array | None = None, scale: float | None = None, impl: str = "auto") -> jax.Array:
    """`kernels.attention`, in query chunks when the XLA path would materialise long logits; flash paths (Pallas)
    get the whole sequence. q [B, Nq, H, D], k/v [B, Nk, H, D]; bias/mask broadcast to [B, H, Nq, Nk]."""
    num_queries = q.shape[1]
    if not _uses_xla(impl) or num_queries * k.shape[1] <= XLA_CHUNK_LOGITS or num_queries <= XLA_QUERY_CHUNK:
        return kernels.attention(q, k, v, bias=bias, mask=mask, scale=scale, impl=impl)

    def rows(x, start):
        if x is None or x.shape[-2] == 1:
            return x
        return x[..., start: start + XLA_QUERY_CHUNK, :]

    chunks = [
        kernels.attention(q[:, start: start + XLA_QUERY_CHUNK], k, v, bias=rows(bias, start), mask=rows(mask, start),
                          scale=scale, impl=impl)
        for start in range(0, num_queries, XLA_QUERY_CHUNK)
    ]
    return jnp.concatenate(chunks, axis=1)


class Attention(nnx.Module):
    """Multi-head attention (see the module docstring).

    Args:
      dim: width of the queries' input (and of the output unless `out_dim`).
      num_heads: heads; `inner_dim` (default `dim`) must be divisible by it.
      inner_dim: width of q, k, v (SAM2's `dim // downsample_rate`; Hiera's `dim_out`).
      out_dim: width of the output projection `proj` (default `dim`).
      kv_dim: input width of keys/values (separate projections only; default `dim`).
      fused: one `qkv` Linear (self-attention) instead of `q_proj`, `k_proj`, `v_proj`.
      qkv_bias, proj_bias: biases of the input / output projections.
      qk_norm: LayerNorm (`norm_eps`) over head channels of q and k.
      scale: logit scale (default head_dim ** -0.5).
      kernel_init, proj_init, bias_init: fresh-weight initialisers (proj_init defaults to kernel_init).
      proj_drop_rate: dropout after the output projection.
      query_chunks: run long XLA attention in query chunks (`chunked_attention`); same result.
      attention_impl: "auto" | "xla" | "pallas" (`kernels.attention`).
    """

    def __init__(
        self, dim: int, num_heads: int, *, inner_dim: int | None = None, out_dim: int | None = None,
        kv_dim: int | None = None, fused: bool = True, qkv_bias: bool = True, proj_bias: bool = True,
        qk_norm: bool = False, norm_eps: float = 1e-6, scale: float | None = None,
        kernel_init: Init = trunc_normal_002, proj_init: Init | None = None,
        bias_init: Init = zeros, proj_drop_rate: float = 0.0, query_chunks: bool = False,
        attention_impl: str = "auto", dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        inner_dim = dim if inner_dim is None else inner_dim
        if inner_dim % num_heads:
            raise ValueError(f"attention width {inner_dim} is not divisible by num_heads {num_heads}")
        if fused and kv_dim not in (None, dim):
            raise ValueError("a fused qkv projection needs keys of the queries' width; use fused=False for kv_dim")
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.inner_dim = inner_dim
        self.scale = scale
        self.fused = fused
        self.query_chunks = query_chunks
        self.attention_impl = attention_impl
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        column = {"use_bias": qkv_bias, "kernel_init": partitioned(kernel_init, SPEC_COLUMN_PARALLEL),
                  "bias_init": bias_init, **common}
        if fused:
            self.qkv = nnx.Linear(dim, 3 * inner_dim, **column)
            self.q_proj = self.k_proj = self.v_proj = None
        else:
            kv_dim = dim if kv_dim is None else kv_dim
            self.qkv = None
            self.q_proj = nnx.Linear(dim, inner_dim, **column)
            self.k_proj = nnx.Linear(kv_dim, inner_dim, **column)
            self.v_proj = nnx.Linear(kv_dim, inner_dim, **column)
        if qk_norm:
            self.q_norm = layer_norm(self.head_dim, eps=norm_eps, **common)
            self.k_norm = layer_norm(self.head_dim, eps=norm_eps, **common)
        else:
            self.q_norm = self.k_norm = None
        self.proj = nnx.Linear(
            inner_dim, dim if out_dim is None else out_dim, use_bias=proj_bias,
            kernel_init=partitioned(proj_init or kernel_init, SPEC_ROW_PARALLEL), bias_init=bias_init, **common,
        )
        self.proj_drop = Dropout(proj_drop_rate, rngs=rngs)

    def split_heads(self, x: jax.Array) -> jax.Array:
        """[..., inner_dim] -> [..., heads, head_dim]."""
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def project(self, x: jax.Array, key: jax.Array | None = None, value: jax.Array | None = None):
        """(q, k, v), each [..., tokens, heads, head_dim], with q/k norm applied.

        Fused: all three from `x` (any leading shape, e.g. NHWC windows). Separate: q from `x`, k from `key`
        (default `x`), v from `value` (default `key`).
        """
        if self.fused:
            if key is not None or value is not None:
                raise ValueError("a fused qkv attention is self-attention; build it with fused=False for cross-attention")
            qkv = self.qkv(x).reshape(*x.shape[:-1], 3, self.num_heads, self.head_dim)
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        else:
            key = x if key is None else key
            value = key if value is None else value
            q = self.split_heads(self.q_proj(x))
            k = self.split_heads(self.k_proj(key))
            v = self.split_heads(self.v_proj(value))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
               mask: jax.Array | None = None, train: bool = False, rngs=None) -> jax.Array:
        """Attention of [B, Nq, H, D] queries over [B, Nk, H, D] keys/values, then `proj`: [B, Nq, out_dim]."""
        core = chunked_attention if self.query_chunks else kernels.attention
        out = core(q, k, v, bias=bias, mask=mask, scale=self.scale, impl=self.attention_impl)
        out = self.proj(out.reshape(*out.shape[:-2], self.inner_dim))
        return self.proj_drop(out, train=train, rngs=rngs)

    def __call__(self, x: jax.Array, key: jax.Array | None = None, value: jax.Array | None = None, *,
                 bias: jax.Array | None = None, mask: jax.Array | None = None, rope: RopeHook | None = None,
                 train: bool = False, rngs=None) -> jax.Array:
        """x [B, N, dim] (-> [B, N, out_dim]); `key`/`value` for cross-attention; `rope(q, k)` before the product."""
        q, k, v = self.project(x, key, value)
        if rope is not None:
            q, k = rope(q, k)
        return self.attend(q, k, v, bias=bias, mask=mask, train=train, rngs=rngs)
