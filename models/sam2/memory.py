"""SAM2 memory: memory attention (`memory_attention.py`) and memory encoder (`memory_encoder.py`).

Memory attention conditions the current frame's stride-16 features on past frames' memories and object pointers
(RoPE self- and cross-attention). The memory encoder fuses a frame's features with its predicted mask into a
64-channel memory. Both are batch-first and NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Mlp, gelu, layer_norm, sharding_scope
from models.sam2.layers import Dtype, conv, default_kernel_init
from models.sam2.neck import sine_position_encoding
from models.sam2.transformer import RoPEAttention


class MemoryAttentionLayer(nnx.Module):
    """Pre-norm: RoPE self-attention, RoPE cross-attention to the memory (keys + memory pos), ReLU MLP."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, ffn_dim: int = 2048, *, attention_impl: str,
                 dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.self_attn = RoPEAttention(dim, 1, attention_impl=attention_impl, **kw)
        self.cross_attn_image = RoPEAttention(dim, 1, kv_in_dim=mem_dim, rope_k_repeat=True,
                                              attention_impl=attention_impl, **kw)
        # The checkpoint's `linear1` / `linear2` (convert.py renames them); the official dropout is a training-time
        # option this port leaves out.
        with sharding_scope():  # the library kernels carry "model"-axis metadata: sharded only under such a mesh
            self.mlp = Mlp(dim, ffn_dim, act="relu", fc1_init=default_kernel_init, **kw)
        self.norm1 = layer_norm(dim, eps=1e-5, **kw)
        self.norm2 = layer_norm(dim, eps=1e-5, **kw)
        self.norm3 = layer_norm(dim, eps=1e-5, **kw)

    def __call__(self, tgt, memory, memory_pos, num_k_exclude_rope: int = 0, memory_mask=None):
        x = self.norm1(tgt)
        tgt = tgt + self.self_attn(x, x, x)
        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(x, memory + memory_pos, memory, num_k_exclude_rope=num_k_exclude_rope,
                                             key_mask=memory_mask)
        x = self.norm3(tgt)
        return tgt + self.mlp(x)


class MemoryAttention(nnx.Module):
    """`num_layers` memory-attention layers and a final LayerNorm; input is `curr + 0.1 * curr_pos`."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, num_layers: int = 4, *, attention_impl: str = "auto",
                 dtype: Dtype = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = {"attention_impl": attention_impl, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.layers = nnx.List([MemoryAttentionLayer(dim, mem_dim, **kw) for _ in range(num_layers)])
        self.norm = layer_norm(dim, eps=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, curr: jax.Array, memory: jax.Array, curr_pos: jax.Array, memory_pos: jax.Array,
                 num_obj_ptr_tokens: int = 0, memory_mask: jax.Array | None = None) -> jax.Array:
        """curr, curr_pos: [B, HW, 256]; memory, memory_pos: [B, M, 64] (the last `num_obj_ptr_tokens` are pointers).

        memory_mask [B, M] bool marks the memory tokens that exist (a fixed-size bank with empty slots); None = all.
        """
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_k_exclude_rope=num_obj_ptr_tokens, memory_mask=memory_mask)
        return self.norm(x)


class MaskDownSampler(nnx.Module):
    """4 x [Conv3x3 s2, LayerNorm2d, GELU] (1 -> 4 -> 16 -> 64 -> 256 channels), then a 1x1 conv."""

    def __init__(self, dim: int = 256, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        layers, channels = {}, 1
        for step in range(4):
            out = channels * 4
            layers[str(3 * step)] = conv(channels, out, 3, stride=2, padding=1, **kw)
            layers[str(3 * step + 1)] = layer_norm(out, eps=1e-6, **kw)
            channels = out
        layers["12"] = conv(channels, dim, 1, **kw)
        self.encoder = nnx.Dict(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        for step in range(4):
            x = gelu(self.encoder[str(3 * step + 1)](self.encoder[str(3 * step)](x)))
        return self.encoder["12"](x)


class CXBlock(nnx.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm, MLP (x4, GELU), layer scale, residual."""

    def __init__(self, dim: int = 256, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.dwconv = conv(dim, dim, 7, padding=3, groups=dim, **kw)
        self.norm = layer_norm(dim, eps=1e-6, **kw)
        # The checkpoint's `pwconv1` / `pwconv2` (convert.py renames them).
        with sharding_scope():  # see MemoryAttentionLayer
            self.mlp = Mlp(dim, 4 * dim, act="gelu", fc1_init=default_kernel_init, **kw)
        self.gamma = nnx.Param(jnp.full((dim,), 1e-6, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.mlp(self.norm(self.dwconv(x)))
        return x + self.gamma[...].astype(y.dtype) * y


class Fuser(nnx.Module):
    """Two CXBlocks."""

    def __init__(self, dim: int = 256, num_layers: int = 2, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [CXBlock(dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(num_layers)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nnx.Module):
    """(pixel features [B, h, w, 256], mask logits [B, 16h, 16w, 1]) -> (memory [B, h, w, 64], pos [B, h, w, 64])."""

    def __init__(self, dim: int = 256, out_dim: int = 64, *, dtype: Dtype = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.mask_downsampler = MaskDownSampler(dim, **kw)
        self.pix_feat_proj = conv(dim, dim, 1, **kw)
        self.fuser = Fuser(dim, **kw)
        self.out_proj = conv(dim, out_dim, 1, **kw)
        self.out_dim = out_dim

    def __call__(self, pix_feat: jax.Array, masks: jax.Array, skip_mask_sigmoid: bool = False):
        if not skip_mask_sigmoid:
            masks = jax.nn.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks.astype(pix_feat.dtype))
        x = self.out_proj(self.fuser(x))
        _batch, height, width, _ = x.shape
        pos = jnp.asarray(sine_position_encoding(height, width, self.out_dim), x.dtype)
        return x, jnp.broadcast_to(pos[None], x.shape)
