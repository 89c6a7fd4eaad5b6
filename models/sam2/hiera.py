"""Hiera trunk of SAM2 (`hieradet.py`): a hierarchical ViT with windowed attention and query pooling.

NHWC throughout. Four stages; heads and width double at each stage; the first block of stages 2-4 max-pools its
queries (and its projected shortcut) by 2x2, attending in the previous stage's windows; a few blocks attend globally.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Attention, Mlp, PatchEmbed, layer_norm, sharding_scope
from models.sam2.layers import Dtype, bicubic_matrix, default_kernel_init, linear


@dataclasses.dataclass(frozen=True)
class HieraConfig:
    """Trunk hyper-parameters (the `trunk` section of the official yaml)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    pos_embed_bkg_size: tuple[int, int] = (7, 7)
    q_pool: int = 3
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last block of each stage."""
        return [sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages))]

    @property
    def channels(self) -> list[int]:
        """Output width of each stage, highest resolution first."""
        return [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """[B, H, W, C] -> [B * nW, window, window, C], zero-padding H and W up to a multiple of `window`."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (-height) % window, (-width) % window
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = height + pad_h, width + pad_w
    x = x.reshape(batch, hp // window, window, wp // window, window, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """Inverse of `window_partition`: [B * nW, window, window, C] -> [B, H, W, C] without the padding."""
    hp, wp = padded_hw
    batch = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(batch, hp // window, wp // window, window, window, -1)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :]


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """MaxPool2d(kernel 2, stride 2, floor mode) on [B, H, W, C]."""
    batch, height, width, channels = x.shape
    x = x[:, : height // 2 * 2, : width // 2 * 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class MultiScaleAttention(Attention):
    """Attention inside one window (or the whole map), optionally max-pooling the queries by 2x2.

    The library `Attention` (fused `qkv` to `dim_out`, `proj`) with the query pooling between its `project` and
    `attend`; long XLA attention (the global blocks at 1024^2) runs in query chunks.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: bool, *, attention_impl: str,
                 dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        super().__init__(dim, num_heads, inner_dim=dim_out, out_dim=dim_out, query_chunks=True,
                         kernel_init=default_kernel_init, attention_impl=attention_impl, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
        self.q_pool = q_pool

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, dim] (a window or the whole map) -> [B, H', W', dim_out] (H' = H / 2 with q_pool)."""
        batch, height, width, _ = x.shape
        q, k, v = self.project(x)  # each [B, H, W, heads, head_dim]
        if self.q_pool:
            q = max_pool_2x2(q.reshape(batch, height, width, -1))
            height, width = q.shape[1:3]
        q = q.reshape(batch, height * width, self.num_heads, self.head_dim)
        k = k.reshape(batch, -1, self.num_heads, self.head_dim)
        v = v.reshape(batch, -1, self.num_heads, self.head_dim)
        return self.attend(q, k, v).reshape(batch, height, width, -1)


class MultiScaleBlock(nnx.Module):
    """Pre-norm block: (windowed, q-pooled) attention + MLP; a projected, pooled shortcut when the width changes."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, *, q_stride: bool, window_size: int, mlp_ratio: float,
                 attention_impl: str, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        # The library layers' kernels carry "model"-axis metadata: built sharded only under such a mesh.
        with sharding_scope():
            self.norm1 = layer_norm(dim, eps=1e-6, **kw)
            self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride, attention_impl=attention_impl, **kw)
            self.norm2 = layer_norm(dim_out, eps=1e-6, **kw)
            self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act="gelu", fc1_init=default_kernel_init, **kw)
            self.proj = linear(dim, dim_out, **kw) if dim != dim_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.norm1(x)
        if self.proj is not None:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = max_pool_2x2(shortcut)
        window = self.window_size
        height, width = x.shape[1:3]
        if window > 0:
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if self.q_stride:
            # The queries were pooled inside each window: the windows are now half as wide.
            window = self.window_size // 2
            height, width = shortcut.shape[1:3]
            padded_hw = (height + (-height) % window, width + (-width) % window) if window > 0 else None
        if self.window_size > 0:
            x = window_unpartition(x, window, padded_hw, (height, width))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nnx.Module):
    """The Hiera trunk; `__call__` returns the four stage outputs, highest resolution first, NHWC."""

    def __init__(self, config: HieraConfig, *, attention_impl: str = "auto", dtype: Dtype = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.config = config
        self.dtype = dtype
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(7, 3, dim, stride=4, padding=3, flatten=False, **kw)  # NHWC, H/4 x W/4
        bkg_h, bkg_w = config.pos_embed_bkg_size
        window0 = config.window_spec[0]
        # Stored NHWC: (1, h, w, C); the converter transposes torch's (1, C, h, w).
        self.pos_embed = nnx.Param(jnp.zeros((1, bkg_h, bkg_w, dim), param_dtype))
        self.pos_embed_window = nnx.Param(jnp.zeros((1, window0, window0, dim), param_dtype))
        stage_ends = config.stage_ends
        q_pool_blocks = [end + 1 for end in stage_ends[:-1]][: config.q_pool]
        blocks, num_heads, stage = [], config.num_heads, 0
        for index in range(sum(config.stages)):
            dim_out = dim
            # A stage's first block still uses the previous stage's window (it pools inside it).
            window = 0 if index in config.global_att_blocks else config.window_spec[stage]
            if index - 1 in stage_ends:
                dim_out = int(dim * config.dim_mul)
                num_heads = int(num_heads * config.head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(dim, dim_out, num_heads, q_stride=index in q_pool_blocks, window_size=window,
                                mlp_ratio=config.mlp_ratio, attention_impl=attention_impl, **kw)
            )
            dim = dim_out
        self.blocks = nnx.List(blocks)

    def position_embedding(self, height: int, width: int) -> jax.Array:
        """Background embedding resized with torch's bicubic kernel, plus the tiled window embedding: (1, H, W, C)."""
        background = self.pos_embed[...].astype(jnp.float32)
        rows = jnp.asarray(bicubic_matrix(background.shape[1], height), jnp.float32)
        cols = jnp.asarray(bicubic_matrix(background.shape[2], width), jnp.float32)
        pos = jnp.einsum("Hh,bhwc,Ww->bHWc", rows, background, cols, precision=jax.lax.Precision.HIGHEST)
        window = self.pos_embed_window[...].astype(jnp.float32)
        reps = (1, height // window.shape[1], width // window.shape[2], 1)
        return pos + jnp.tile(window, reps)

    # Per-stage API: SAMWISE interleaves the stages with text-encoder layers and adapters (its `_early_fusion_stage`).

    def embed(self, x: jax.Array) -> jax.Array:
        """Patch embedding plus position embedding: [B, H, W, 3] -> [B, H/4, W/4, C] (the input of stage 0)."""
        x = self.patch_embed(x)
        pos = self.position_embedding(x.shape[1], x.shape[2])
        return x + pos.astype(x.dtype)

    @property
    def num_stages(self) -> int:
        """Number of stages (4)."""
        return len(self.config.stages)

    def forward_stage(self, index: int, x: jax.Array) -> jax.Array:
        """Run the blocks of stage `index` (0-based) on the previous stage's output (or `embed`'s)."""
        if not 0 <= index < self.num_stages:
            raise ValueError(f"Hiera has stages 0..{self.num_stages - 1}; got {index}")
        ends = self.config.stage_ends
        start = 0 if index == 0 else ends[index - 1] + 1
        for block in self.blocks[start: ends[index] + 1]:
            x = block(x)
        return x

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """x: [B, H, W, 3] normalised image -> [stage1 (H/4), stage2 (H/8), stage3 (H/16), stage4 (H/32)]."""
        x = self.embed(x)
        outputs = []
        for index in range(self.num_stages):
            x = self.forward_stage(index, x)
            outputs.append(x)
        return outputs
