"""SAMWISE's Cross-Modal Temporal (CMT) adapter (official `models/CMT_adapter.py`, `models/layers.py`).

One adapter sits after Hiera stages 2-4, on the stage's visual features of a clip of T frames and the text features
(RoBERTa tokens). It works at a reduced width (`adapter_channels`):

1. visual down-projection: 1x1 conv without bias -> BatchNorm -> ReLU; text down-projection: Linear without bias;
2. Hierarchical Selective Attention (HSA, optional, on by default in the released runs): each frame is cut into
   p x p patches (p = 8 / 4 / 2 for the three stages); a patch at the same place in every frame of the clip forms
   one sequence of T p^2 tokens, with a sine temporal embedding (normalised positions, `PositionEmbeddingSine1D`) and
   a learned spatial embedding per position in the patch, LayerNorm, then self-attention + a Linear. Added to the
   visual tokens;
3. visual-to-text adaptation: tokens x MHA(tokens, text) (a multiplicative gate, the official `AdapterCA`), the text
   repeated for every frame;
4. text-to-visual adaptation: text x MHA(text, the down-projected visual tokens averaged over the clip's frames);
5. up-projections: 1x1 transposed conv without bias -> BatchNorm -> ReLU; Linear without bias.

The caller adds the outputs to the stage's features and the text stream (the residuals of the early-fusion loop).
All attention goes through `models.layers.Attention` (`kernels.attention`).

Layout: the official code is sequence-first (`(h w) (b t) c`); here tensors are batch-first, frames NHWC:
`vis` (B T, H, W, C_vis) frame-major per clip (video b's frames are rows b T .. b T + T - 1), `text` (B, L, C_txt).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Attention, TorchBatchNorm, layer_norm, sharding_scope

_trunc02 = nnx.initializers.truncated_normal(0.02)


def sine_time_embedding(num_frames: int, dim: int, *, temperature: float = 10000.0,
                        scale: float = 2 * math.pi) -> jax.Array:
    """(T, dim) float32: the official `PositionEmbeddingSine1D(dim, normalize=True)` of T frames: positions 1..T
    normalised to (0, scale], frequencies temperature^(2 floor(i / 2) / dim), channels [sin, cos, sin, cos, ...]."""
    if dim % 2:
        raise ValueError(f"the sine time embedding needs an even width, got {dim}")
    positions = jnp.arange(1, num_frames + 1, dtype=jnp.float32)
    positions = positions / (positions[-1] + 1e-6) * scale
    index = jnp.arange(dim, dtype=jnp.float32)
    freqs = temperature ** (2 * (index // 2) / dim)
    angles = positions[:, None] / freqs  # (T, dim)
    return jnp.stack([jnp.sin(angles[:, 0::2]), jnp.cos(angles[:, 1::2])], axis=-1).reshape(num_frames, dim)


class AdapterCrossAttention(nnx.Module):
    """The official `AdapterCA`: query * MHA(query, memory, memory) (q / k / v / out projections with biases)."""

    def __init__(self, dim: int, num_heads: int, *, attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.multihead_attn = Attention(dim, num_heads, fused=False, qkv_bias=True, attention_impl=attention_impl,
                                        dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, query: jax.Array, memory: jax.Array) -> jax.Array:
        return query * self.multihead_attn(query, memory, memory)


class HierarchicalSelectiveAttention(nnx.Module):
    """The official `HSA`: Linear(MHA(x, x, x)) over a sequence of tokens (no residual inside)."""

    def __init__(self, dim: int, num_heads: int, *, attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.self_attn = Attention(dim, num_heads, fused=True, qkv_bias=True, attention_impl=attention_impl, **common)
        self.linear = nnx.Linear(dim, dim, **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(self.self_attn(x))


class ConvBNReLU(nnx.Module):
    """1x1 conv (or 1x1 transposed conv: the same map, its torch weight is stored (in, out)) without bias ->
    BatchNorm (torch numerics) -> ReLU, on NHWC features."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        self.conv = nnx.Linear(in_channels, out_channels, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
        self.bn = TorchBatchNorm(out_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x), train=train))


class CMTAdapter(nnx.Module):
    """One Cross-Modal Temporal adapter (see the module docstring).

    Args:
      vis_channels: width of the Hiera stage it adapts; text_channels: the text encoder's width (768 for RoBERTa).
      adapter_channels: the reduced width (official 256); num_heads: 8 (official, every attention).
      hsa_patch_size: p, the side of the HSA patches (8 / 4 / 2 after stages 2 / 3 / 4); use_hsa: the `--HSA` flag.
    """

    def __init__(self, vis_channels: int, text_channels: int, adapter_channels: int, *, hsa_patch_size: int = 2,
                 use_hsa: bool = True, num_heads: int = 8, attention_impl: str = "auto", dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        with sharding_scope():
            self._build(vis_channels, text_channels, adapter_channels, hsa_patch_size, use_hsa, num_heads,
                        attention_impl, dtype, param_dtype, rngs)

    def _build(self, vis_channels, text_channels, adapter_channels, hsa_patch_size, use_hsa, num_heads,
               attention_impl, dtype, param_dtype, rngs) -> None:
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        attn = {"attention_impl": attention_impl, **common}
        self.adapter_channels = adapter_channels
        self.hsa_patch_size = hsa_patch_size
        self.use_hsa = use_hsa
        self.proj_vis_down = ConvBNReLU(vis_channels, adapter_channels, **common)
        self.proj_vis_up = ConvBNReLU(adapter_channels, vis_channels, **common)
        self.proj_text_down = nnx.Linear(text_channels, adapter_channels, use_bias=False, **common)
        self.proj_text_up = nnx.Linear(adapter_channels, text_channels, use_bias=False, **common)
        self.ca_V2T = AdapterCrossAttention(adapter_channels, num_heads, **attn)
        self.ca_T2V = AdapterCrossAttention(adapter_channels, num_heads, **attn)
        if use_hsa:
            self.hsa = HierarchicalSelectiveAttention(adapter_channels, num_heads, **attn)
            self.spatial_pos_embed = nnx.Param(
                _trunc02(rngs.params(), (1, 1, 1, hsa_patch_size * hsa_patch_size, adapter_channels), param_dtype))
            self.norm_pre_HSA = layer_norm(adapter_channels, eps=1e-5, **common)
        else:
            self.hsa = self.spatial_pos_embed = self.norm_pre_HSA = None

    def _hsa(self, x: jax.Array, batch: int, clip_length: int) -> jax.Array:
        """x (B T, H, W, C) -> the HSA term, same shape."""
        p = self.hsa_patch_size
        _, height, width, channels = x.shape
        if height % p or width % p:
            raise ValueError(f"HSA patches of {p}x{p} need the feature map ({height}x{width}) to be a multiple of {p}")
        h1, w1 = height // p, width // p
        y = x.reshape(batch, clip_length, h1, p, w1, p, channels).transpose(0, 1, 2, 4, 3, 5, 6)
        y = y.reshape(batch, clip_length, h1 * w1, p * p, channels)  # b t N (p p) c
        time = sine_time_embedding(clip_length, channels).astype(y.dtype)
        y = y + time[None, :, None, None, :] + self.spatial_pos_embed[...].astype(y.dtype)
        # One sequence per patch position and video: the T p^2 tokens of that patch in every frame, time-major.
        y = y.transpose(0, 2, 1, 3, 4).reshape(batch * h1 * w1, clip_length * p * p, channels)
        y = self.hsa(self.norm_pre_HSA(y))
        y = y.reshape(batch, h1, w1, clip_length, p, p, channels).transpose(0, 3, 1, 4, 2, 5, 6)
        return y.reshape(batch * clip_length, height, width, channels)

    def __call__(self, vis: jax.Array, text: jax.Array, *, clip_length: int,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """vis (B T, H, W, C_vis), text (B, L, C_txt) -> (visual update (B T, H, W, C_vis), text update (B, L,
        C_txt)). `train` runs the BatchNorms on batch statistics."""
        frames, height, width, _ = vis.shape
        if frames % clip_length:
            raise ValueError(f"{frames} frames are not a whole number of clips of {clip_length}")
        batch = frames // clip_length
        if text.shape[0] != batch:
            raise ValueError(f"text batch {text.shape[0]} != the {batch} clips of {clip_length} frames in vis")
        x = self.proj_vis_down(vis, train=train)  # (B T, H, W, Ca)
        t = self.proj_text_down(text)  # (B, L, Ca)
        attended = x
        if self.use_hsa:
            attended = attended + self._hsa(x, batch, clip_length)
        tokens = attended.reshape(frames, height * width, -1)
        text_per_frame = jnp.repeat(t, clip_length, axis=0)  # video b's text for each of its frames
        tokens = self.ca_V2T(tokens, text_per_frame)
        clip_mean = x.reshape(batch, clip_length, height * width, -1).mean(axis=1)  # (B, H W, Ca)
        t_attended = self.ca_T2V(t, clip_mean)
        vis_out = self.proj_vis_up(tokens.reshape(frames, height, width, -1), train=train)
        return vis_out, self.proj_text_up(t_attended)
