"""Attention layers of the SAM heads and the memory: `attention`, `RoPEAttention`, `TwoWayTransformer`.

Sequences are batch-first, [B, N, C]. Every attention is the library `models.layers.Attention` with separate
`q_proj` / `k_proj` / `v_proj` to `dim // downsample_rate` channels and the output projection `proj` (the checkpoint's
`out_proj`, renamed by `convert.py`); it goes through `kernels.attention`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import Attention, Mlp, layer_norm, sharding_scope
from models.sam2.layers import Dtype, default_kernel_init


def attention(dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None, *,
              attention_impl: str = "auto", dtype: Dtype = None, param_dtype: Dtype = jnp.float32,
              rngs: nnx.Rngs) -> Attention:
    """SAM2's `Attention(dim, num_heads, downsample_rate, kv_in_dim)` as the library `Attention`: called
    `(queries, keys, values)`, q/k/v projected to `dim // downsample_rate`, keys/values of width `kv_in_dim`."""
    with sharding_scope():  # the library kernels carry "model"-axis metadata: sharded only under such a mesh
        return Attention(dim, num_heads, inner_dim=dim // downsample_rate, kv_dim=kv_in_dim, fused=False,
                         kernel_init=default_kernel_init, attention_impl=attention_impl, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)


@functools.lru_cache(maxsize=16)
def axial_rope_angles(head_dim: int, width: int, height: int, theta: float = 10000.0) -> np.ndarray:
    """(W*H, head_dim/2) rotation angles of SAM2's axial 2D RoPE: x frequencies then y frequencies, row-major tokens."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 4)[: head_dim // 4].astype(np.float32) / head_dim))
    t = np.arange(width * height, dtype=np.float32)
    t_x, t_y = t % width, np.floor(t / width)
    angles = np.concatenate([np.outer(t_x, freqs), np.outer(t_y, freqs)], axis=-1).astype(np.float32)
    angles.setflags(write=False)
    return angles


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of [B, N, heads, D] by angles [N, D/2] (torch `view_as_complex`)."""
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([real * cos - imag * sin, real * sin + imag * cos], axis=-1)
    return rotated.reshape(x.shape).astype(dtype)


class RoPEAttention(Attention):
    """The library `Attention` with axial 2D rotary encoding on q and k through its `rope` hook (memory attention).

    The query grid is assumed square (side sqrt(N_q)); with `rope_k_repeat` the keys are several memory frames of
    the same grid and reuse the same table; the last `num_k_exclude_rope` keys (object pointers) are not rotated.
    """

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None, *,
                 rope_theta: float = 10000.0, rope_k_repeat: bool = False, attention_impl: str = "auto",
                 dtype: Dtype = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        with sharding_scope():  # see `attention`
            super().__init__(dim, num_heads, inner_dim=dim // downsample_rate, kv_dim=kv_in_dim, fused=False,
                             kernel_init=default_kernel_init, attention_impl=attention_impl, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat

    def rotary(self, num_k_exclude_rope: int = 0):
        """The `rope(q, k)` hook: rotate q, and all keys but the last `num_k_exclude_rope`, on the query grid."""

        def rope(q: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
            side = round(q.shape[1] ** 0.5)
            if side * side != q.shape[1]:
                raise ValueError(f"RoPEAttention expects a square query grid; got {q.shape[1]} tokens")
            angles = jnp.asarray(axial_rope_angles(q.shape[-1], side, side, self.rope_theta))
            q = apply_rope(q, angles)
            num_rope = k.shape[1] - num_k_exclude_rope
            if num_rope > 0:
                if num_rope != q.shape[1] and not self.rope_k_repeat:
                    raise ValueError("keys and queries differ in length; RoPE on keys needs rope_k_repeat=True")
                repeats = num_rope // q.shape[1]
                k_rope = apply_rope(k[:, :num_rope], jnp.tile(angles, (repeats, 1)))
                k = jnp.concatenate([k_rope, k[:, num_rope:]], axis=1)
            return q, k

        return rope

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, num_k_exclude_rope: int = 0,
                 key_mask: jax.Array | None = None) -> jax.Array:
        """Queries [B, Nq, dim], keys / values [B, Nk, kv_in_dim] -> [B, Nq, dim].

        key_mask [B, Nk] bool (True = may attend) hides empty slots of the fixed-size video memory bank.
        """
        mask = None if key_mask is None else key_mask[:, None, None, :]
        return super().__call__(q, k, v, mask=mask, rope=self.rotary(num_k_exclude_rope))


class TwoWayAttentionBlock(nnx.Module):
    """Tokens self-attend, attend to the image, go through an MLP; then the image attends to the tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool, *,
                 attention_impl: str, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        attn_kw = dict(attention_impl=attention_impl, **kw)
        self.self_attn = attention(dim, num_heads, **attn_kw)
        self.norm1 = layer_norm(dim, eps=1e-5, **kw)
        self.cross_attn_token_to_image = attention(dim, num_heads, downsample_rate, **attn_kw)
        self.norm2 = layer_norm(dim, eps=1e-5, **kw)
        with sharding_scope():  # see `attention`
            self.mlp = Mlp(dim, mlp_dim, act="relu", fc1_init=default_kernel_init, **kw)
        self.norm3 = layer_norm(dim, eps=1e-5, **kw)
        self.norm4 = layer_norm(dim, eps=1e-5, **kw)
        self.cross_attn_image_to_token = attention(dim, num_heads, downsample_rate, **attn_kw)
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """SAM's two-way transformer: `depth` blocks, then a final token-to-image attention and LayerNorm."""

    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample_rate: int = 2, *, attention_impl: str = "auto", dtype: Dtype = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.layers = nnx.List([
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, index == 0, attention_impl=attention_impl,
                                 **kw)
            for index in range(depth)
        ])
        self.final_attn_token_to_image = attention(dim, num_heads, downsample_rate, attention_impl=attention_impl,
                                                   **kw)
        self.norm_final_attn = layer_norm(dim, eps=1e-5, **kw)

    def __call__(self, image: jax.Array, image_pe: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """image, image_pe: [B, H, W, C]; tokens: [B, N, C] -> (tokens [B, N, C], image [B, H*W, C])."""
        batch, height, width, channels = image.shape
        keys = image.reshape(batch, height * width, channels)
        key_pe = image_pe.reshape(batch, height * width, channels)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn_out = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys
