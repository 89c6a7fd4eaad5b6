"""FcaFormer (Zhang et al., "Fcaformer: Forward Cross Attention in Hybrid Vision Transformer", arXiv 2211.07198).

A hybrid network: a two-conv stem, two ConvNeXt stages and two transformer stages whose blocks also attend to
*cross tokens*, the spatially merged outputs of the earlier blocks of the same stage ("forward cross attention").
Follows the official `image_classification/models/fcaformer.py` (hkzhang-git/FcaFormer @ 7dcd8e0) layer for layer;
deviations are listed in this folder's README.

Layout is NHWC throughout; the transformer stages carry tokens as [batch, H*W, channels] in row-major order, which is
the order of the official `rearrange('b c h w -> b (h w) c')`, so relative-position tables and cross tokens line up
with the official checkpoints without any permutation.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The attention itself runs in `models.layers.Attention` (through `kernels.attention`); the module stays importable
# as `models.fcaformer.model.kernels`, the handle through which callers and tests swap the attention backend.
import kernels  # noqa: F401
from models.layers import (
    SPEC_COLUMN_PARALLEL,
    SPEC_ROW_PARALLEL,
    Attention,
    DropPath,
    Mlp,
    gelu,
    layer_norm,
    partitioned,
    sharding_scope,
)
from models.layers.sharding import zeros

# timm's trunc_normal_(std=.02) truncates at +-2 (absolute), i.e. +-100 std: effectively a plain normal (the library's
# `trunc_normal_002` cuts at +-2 std, which is not the official init).
_weight_init = nnx.initializers.normal(0.02)


@functools.cache
def relative_bias_index(height: int, width: int) -> tuple[np.ndarray, int]:
    """(N x N table of offset ids, number of ids) for a height x width token grid.

    Ids enumerate the distinct (|dy|, |dx|) offsets in first-seen order over (query, key) pairs in row-major order,
    exactly as the official code (and LeViT / TinyViT) builds `attention_bias_idxs`, so the columns of a converted
    `attention_biases` table keep their meaning.
    """
    points = list(itertools.product(range(height), range(width)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = np.empty((len(points), len(points)), np.int32)
    for i, (y1, x1) in enumerate(points):
        for j, (y2, x2) in enumerate(points):
            idxs[i, j] = offsets.setdefault((abs(y1 - y2), abs(x1 - x2)), len(offsets))
    idxs.setflags(write=False)
    return idxs, len(offsets)


class ConvBN(nnx.Module):
    """Conv2d without bias followed by BatchNorm (the official `Conv2d_BN`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            feature_group_count=groups,
            use_bias=False,
            kernel_init=_weight_init,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        # torch BatchNorm2d: eps 1e-5, momentum 0.1 (= flax momentum 0.9 on the running average).
        self.bn = nnx.BatchNorm(
            out_features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.bn(self.conv(x), use_running_average=not train)


class ConvStem(nnx.Module):
    """Stem: ConvBN 3x3/2 -> GELU -> ConvBN 3x3/2, to a quarter of the input resolution (official `PatchEmbed`, the
    model's `patch_embed`; a conv stem, not the library's single-conv `models.layers.PatchEmbed`)."""

    def __init__(self, in_chans: int, embed_dim: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = ConvBN(in_chans, embed_dim // 2, 3, 2, 1, **kw)
        self.conv2 = ConvBN(embed_dim // 2, embed_dim, 3, 2, 1, **kw)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.conv2(gelu(self.conv1(x, train=train)), train=train)


class PatchMerging(nnx.Module):
    """TinyViT-style downsampling: ConvBN 1x1 -> GELU -> depthwise ConvBN 3x3/2 -> GELU -> ConvBN 1x1."""

    def __init__(self, dim: int, out_dim: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = ConvBN(dim, out_dim, 1, 1, 0, **kw)
        self.conv2 = ConvBN(out_dim, out_dim, 3, 2, 1, groups=out_dim, **kw)
        self.conv3 = ConvBN(out_dim, out_dim, 1, 1, 0, **kw)

    def __call__(self, x_bhwc: jax.Array, *, train: bool = False) -> jax.Array:
        x = gelu(self.conv1(x_bhwc, train=train))
        x = gelu(self.conv2(x, train=train))
        return self.conv3(x, train=train)


class CxBlock(nnx.Module):
    """ConvNeXt block: dw 7x7 conv -> LayerNorm(eps 1e-6) -> Linear 4x -> GELU -> Linear -> layer scale -> DropPath."""

    def __init__(
        self,
        dim: int,
        *,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.dwconv = nnx.Conv(
            dim, dim, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=dim, kernel_init=_weight_init,
            bias_init=zeros, **kw
        )
        self.norm = layer_norm(dim, eps=1e-6, **kw)
        # The ConvNeXt MLP keeps its official names (pwconv1/2); its hidden bias is split with pwconv1's outputs.
        self.pwconv1 = nnx.Linear(
            dim, 4 * dim, kernel_init=partitioned(_weight_init, SPEC_COLUMN_PARALLEL),
            bias_init=partitioned(zeros, ("model",)), **kw
        )
        self.pwconv2 = nnx.Linear(
            4 * dim, dim, kernel_init=partitioned(_weight_init, SPEC_ROW_PARALLEL), bias_init=zeros, **kw
        )
        self.gamma = nnx.Param(jnp.full((dim,), layer_scale_init_value, param_dtype))
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x_bhwc: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        y = self.pwconv2(gelu(self.pwconv1(self.norm(self.dwconv(x_bhwc)))))
        # Layer scale in the compute dtype, so a bf16 model does not widen the residual stream to f32.
        return x_bhwc + self.drop_path(self.gamma[...].astype(y.dtype) * y, train=train, rngs=rngs)


class FcaBlock(nnx.Module):
    """Transformer block with forward cross attention and token merge and enhancement (TME).

    Block `index` of a stage attends to its own N tokens and to `num_cross` cross tokens, the merged tokens that
    the earlier blocks of the stage produced (at most `cab_max_d` sets). Cross tokens are scaled per token
    (`s_scale_factors`), normalised by their own LayerNorm (`s_norm`) and projected by the *same* qkv Linear
    (`attn.qkv`); one softmax runs over main and cross keys, with the relative position bias on the main part and the
    per-head `s_token_bias` on the cross part. After the attention residual, a stride-4 depthwise 7x7 conv merges the
    tokens into this block's cross tokens (every block but the last), a depthwise 3x3 ConvBN enhances them, and the
    MLP residual follows: `mlp_norm` (the official MLP's own LayerNorm, on top of `norm2`) -> `mlp` (fc1/GELU/fc2).
    """

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        *,
        index: int,
        depth: int,
        cab_max_d: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        attention_impl: str = "auto",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.dim = dim
        self.resolution = tuple(resolution)
        self.num_heads = num_heads
        height, width = self.resolution
        tokens_per_set = math.ceil(height / 4) * math.ceil(width / 4)
        self.num_cross = min(index, cab_max_d) * tokens_per_set

        self.gamma_1 = nnx.Param(jnp.full((dim,), layer_scale_init_value, param_dtype))
        self.gamma_2 = nnx.Param(jnp.full((dim,), layer_scale_init_value, param_dtype))
        # Merge conv of TME: its output (ceil(H/4) * ceil(W/4) tokens) feeds the later blocks.
        if index < depth - 1:
            self.dw_conv = nnx.Conv(
                dim, dim, (7, 7), strides=(4, 4), padding=((3, 3), (3, 3)), feature_group_count=dim, use_bias=False,
                kernel_init=_weight_init, **kw
            )
        else:
            self.dw_conv = None
        if self.num_cross:
            # Official shapes, so they broadcast as they are: (1, heads, 1, N_s) and (1, N_s, 1).
            self.s_token_bias = nnx.Param(jnp.zeros((1, num_heads, 1, self.num_cross), param_dtype))
            self.s_norm = layer_norm(dim, eps=1e-5, **kw)
            self.s_scale_factors = nnx.Param(jnp.ones((1, self.num_cross, 1), param_dtype))
        else:
            self.s_token_bias = self.s_norm = self.s_scale_factors = None

        self.norm1 = layer_norm(dim, eps=1e-5, **kw)
        _, num_offsets = relative_bias_index(height, width)
        self.attention_biases = nnx.Param(jnp.zeros((num_heads, num_offsets), param_dtype))
        self.attn = Attention(
            dim, num_heads, scale=(dim // num_heads) ** -0.5, kernel_init=_weight_init, attention_impl=attention_impl,
            **kw,
        )
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim, **kw)
        self.norm2 = layer_norm(dim, eps=1e-5, **kw)
        self.mlp_norm = layer_norm(dim, eps=1e-5, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), fc1_init=_weight_init, **kw)
        # One module, two independent draws per step (attention and MLP branches), as the official single DropPath.
        self.drop_path = DropPath(drop_path, rngs=rngs)

    @property
    def qkv(self) -> nnx.Linear:
        """The fused qkv Linear under its official name (`blocks.N.qkv`); it lives at `attn.qkv`."""
        return self.attn.qkv

    @property
    def proj(self) -> nnx.Linear:
        """The attention output Linear under its official name (`blocks.N.proj`); it lives at `attn.proj`."""
        return self.attn.proj

    def _attention(self, x: jax.Array, cross: jax.Array | None, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        height, width = self.resolution
        q, k, v = self.attn.project(self.norm1(x))
        idxs, _ = relative_bias_index(height, width)
        bias = jnp.take(self.attention_biases[...], jnp.asarray(idxs), axis=1)[None]  # (1, h, N, N)
        if self.num_cross:
            if cross is None or cross.shape[1] != self.num_cross:
                raise ValueError(
                    f"block expects {self.num_cross} cross tokens, got {None if cross is None else cross.shape}"
                )
            s = self.s_norm(cross * self.s_scale_factors[...])  # scale, then LN (eps 1e-5): the official order
            # Only keys and values are needed for the cross tokens: apply the k/v columns of the shared qkv Linear.
            qkv = self.attn.qkv
            kernel = qkv.kernel[...][:, dim:]
            kv_s = jnp.dot(s.astype(qkv.dtype or s.dtype), kernel.astype(qkv.dtype or kernel.dtype))
            kv_s = (kv_s + qkv.bias[...][dim:]).reshape(batch, self.num_cross, 2, heads, head_dim)
            k = jnp.concatenate([k, kv_s[:, :, 0].astype(k.dtype)], axis=1)
            v = jnp.concatenate([v, kv_s[:, :, 1].astype(v.dtype)], axis=1)
            cross_bias = jnp.broadcast_to(self.s_token_bias[...], (1, heads, tokens, self.num_cross))
            bias = jnp.concatenate([bias, cross_bias.astype(bias.dtype)], axis=-1)
        return self.attn.attend(q, k, v, bias=bias, train=train, rngs=rngs)

    def __call__(
        self, x: jax.Array, cross: jax.Array | None = None, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> tuple[jax.Array, jax.Array | None]:
        """x: [batch, H*W, dim]; cross: [batch, num_cross, dim] or None. Returns (x, this block's cross tokens)."""
        batch, tokens, dim = x.shape
        height, width = self.resolution
        y = self._attention(x, cross, train=train, rngs=rngs)
        x = x + self.drop_path(self.gamma_1[...].astype(y.dtype) * y, train=train, rngs=rngs)
        x_bhwc = x.reshape(batch, height, width, dim)
        new_cross = None
        if self.dw_conv is not None:
            new_cross = self.dw_conv(x_bhwc).reshape(batch, -1, dim)
        x = self.local_conv(x_bhwc, train=train).reshape(batch, tokens, dim)
        y = self.mlp(self.mlp_norm(self.norm2(x)), train=train, rngs=rngs)
        x = x + self.drop_path(self.gamma_2[...].astype(y.dtype) * y, train=train, rngs=rngs)
        return x, new_cross


class ConvStage(nnx.Module):
    """`depth` CxBlocks followed by PatchMerging to `out_dim` (official `CxLayer`)."""

    def __init__(
        self, dim: int, out_dim: int, depth: int, drop_path: Sequence[float], *, layer_scale_init_value: float,
        dtype: Any, param_dtype: Any, rngs: nnx.Rngs
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.blocks = nnx.List(
            [CxBlock(dim, drop_path=drop_path[j], layer_scale_init_value=layer_scale_init_value, **kw)
             for j in range(depth)]
        )
        self.downsample = PatchMerging(dim, out_dim, **kw)

    def __call__(self, x_bhwc: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        for block in self.blocks:
            x_bhwc = block(x_bhwc, train=train, rngs=rngs)
        return self.downsample(x_bhwc, train=train)


class FcaStage(nnx.Module):
    """`depth` FcaBlocks sharing cross tokens, then optionally PatchMerging (official `FcaLayer`)."""

    def __init__(
        self, dim: int, out_dim: int | None, resolution: tuple[int, int], depth: int, num_heads: int,
        drop_path: Sequence[float], *, cab_max_d: int, mlp_ratio: float, layer_scale_init_value: float,
        attention_impl: str, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.resolution = tuple(resolution)
        self.cab_max_d = cab_max_d
        self.blocks = nnx.List([
            FcaBlock(
                dim, resolution, num_heads, index=i, depth=depth, cab_max_d=cab_max_d, mlp_ratio=mlp_ratio,
                drop_path=drop_path[i], layer_scale_init_value=layer_scale_init_value, attention_impl=attention_impl,
                **kw
            )
            for i in range(depth)
        ])
        self.downsample = PatchMerging(dim, out_dim, **kw) if out_dim is not None else None

    def __call__(self, x_bhwc: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        batch, height, width, dim = x_bhwc.shape
        x = x_bhwc.reshape(batch, height * width, dim)
        cross_sets: list[jax.Array] = []
        for i, block in enumerate(self.blocks):
            # Oldest first, at most cab_max_d sets (official `torch.cat(s_list[-cab_max_d:], dim=1)`).
            cross = jnp.concatenate(cross_sets[-self.cab_max_d:], axis=1) if i > 0 else None
            x, new_cross = block(x, cross, train=train, rngs=rngs)
            if new_cross is not None:
                cross_sets.append(new_cross)
        x_bhwc = x.reshape(batch, height, width, dim)
        return self.downsample(x_bhwc, train=train) if self.downsample is not None else x_bhwc


class FcaFormer(nnx.Module):
    """Hybrid FcaFormer classifier: stem, two ConvNeXt stages, two forward-cross-attention stages, mean-pool head.

    Args:
      img_size: input (height, width) or a side; the relative-position tables and cross-token counts depend on it,
        so inputs must have exactly this size (stage-2 grid = img_size // 16, stage-3 grid = img_size // 32).
      embed_dims: channels of stages 0-3.
      depths: blocks per stage.
      num_heads: heads of stages 2 and 3 (entries for stages 0-1 are ignored, as in the official `[0, 0, h2, h3]`).
      cab_max_d: most cross-token sets one block attends to.
      drop_path_rate: stochastic depth, linear from 0 over all blocks (official default 0.1; recipe 0/0.1/0.2/0.4).
      layer_scale_init_value: initial layer scales (official: hard-coded 1e-6).
      attention_impl: passed to `kernels.attention` ("auto", "xla", "pallas").
      use_ema: when loading an official training checkpoint, take its `model_ema` weights instead of `model`.

    Layer ids for layer-wise LR decay (`layer_id`, `max_layer_id`): 0 = stem, every block in forward order 1..num_blocks,
    norm_head / head num_blocks + 1.
    """

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (48, 96, 192, 384),
        depths: Sequence[int] = (3, 3, 9, 2),
        num_heads: Sequence[int] = (0, 0, 12, 24),
        mlp_ratio: float = 4.0,
        cab_max_d: int = 12,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        attention_impl: str = "auto",
        use_ema: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(embed_dims) != 4 or len(depths) != 4:
            raise ValueError(f"FcaFormer has 4 stages; got embed_dims {embed_dims} and depths {depths}")
        heads = tuple(num_heads)[-2:]
        for dim, h in zip(embed_dims[2:], heads):
            if h <= 0 or dim % h:
                raise ValueError(f"stage width {dim} must be a positive multiple of its head count {h}")
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.img_size = img_size
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(int(d) for d in depths)
        self.use_ema = use_ema
        self.dtype = dtype
        # Grids as the official code computes them (floor divisions of the stem's img_size // 4).
        base = (img_size[0] // 4, img_size[1] // 4)
        self.grids = tuple((base[0] // 2**k, base[1] // 2**k) for k in range(4))
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        starts = np.cumsum([0, *depths]).tolist()
        dpr = [rates[starts[k]:starts[k + 1]] for k in range(4)]

        # Sharding annotations are metadata for the trainer's mesh: variables are born sharded only under a mesh with
        # a "model" axis, so the model also builds with no mesh (notebooks, tests); the metadata is kept either way.
        with sharding_scope():
            self._build(in_chans, embed_dims, depths, heads, mlp_ratio, cab_max_d, dpr, layer_scale_init_value,
                        attention_impl, num_classes, kw)

    def _build(self, in_chans, embed_dims, depths, heads, mlp_ratio, cab_max_d, dpr, layer_scale_init_value,
               attention_impl, num_classes, kw) -> None:
        self.patch_embed = ConvStem(in_chans, embed_dims[0], **kw)
        self.stages = nnx.List([
            ConvStage(embed_dims[0], embed_dims[1], depths[0], dpr[0], layer_scale_init_value=layer_scale_init_value,
                      **kw),
            ConvStage(embed_dims[1], embed_dims[2], depths[1], dpr[1], layer_scale_init_value=layer_scale_init_value,
                      **kw),
            FcaStage(embed_dims[2], embed_dims[3], self.grids[2], depths[2], heads[0], dpr[2], cab_max_d=cab_max_d,
                     mlp_ratio=mlp_ratio, layer_scale_init_value=layer_scale_init_value,
                     attention_impl=attention_impl, **kw),
            FcaStage(embed_dims[3], None, self.grids[3], depths[3], heads[1], dpr[3], cab_max_d=cab_max_d,
                     mlp_ratio=mlp_ratio, layer_scale_init_value=layer_scale_init_value,
                     attention_impl=attention_impl, **kw),
        ])
        self.norm_head = layer_norm(embed_dims[-1], eps=1e-5, **kw)
        self.head = (
            nnx.Linear(embed_dims[-1], num_classes, kernel_init=_weight_init, bias_init=zeros, **kw)
            if num_classes > 0 else None
        )

    def max_layer_id(self) -> int:
        """Layer id of the final norm and head: number of blocks + 1 (pass `max_layer_id() - 1` as `num_layers`)."""
        return sum(self.depths) + 1

    def layer_id(self, path: str) -> int:
        """Layer id of the parameter at dotted NNX path `path` (relative to the model, e.g.
        "stages.2.blocks.3.attn.qkv.kernel"), for layer-wise LR decay (BEiT / timm convention).

        0: the stem (`patch_embed`); 1..num_blocks: the blocks, ConvNeXt and FcaBlocks alike, consecutively in forward
        order across stages; the PatchMerging at the end of stage k (`stages.k.downsample`) takes the id of the first
        block of stage k + 1, the block after it, as timm groups ConvNeXt's downsampling with the stage it feeds;
        `norm_head` and `head`: `max_layer_id()`.
        """
        parts = path.split(".")
        if parts[0] == "patch_embed":
            return 0
        if parts[0] in ("norm_head", "head"):
            return self.max_layer_id()
        if parts[0] == "stages" and len(parts) > 3 and parts[1].isdigit() and int(parts[1]) < len(self.depths):
            stage = int(parts[1])
            first = sum(self.depths[:stage]) + 1  # id of the stage's first block
            if parts[2] == "blocks" and parts[3].isdigit() and int(parts[3]) < self.depths[stage]:
                return first + int(parts[3])
            if parts[2] == "downsample" and self.stages[stage].downsample is not None:
                return first + self.depths[stage]
        raise ValueError(f"FcaFormer has no parameter path {path!r} (expected patch_embed.*, stages.K.blocks.J.*, "
                         "stages.K.downsample.*, norm_head.* or head.*)")

    def forward_features(
        self, x_bhwc: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        """Images [batch, H, W, C] (normalised) -> last feature map [batch, H/32, W/32, embed_dims[3]]."""
        if tuple(x_bhwc.shape[1:3]) != self.img_size:
            raise ValueError(
                f"FcaFormer was built for {self.img_size} inputs (relative-position tables and cross-token counts "
                f"depend on it); got images of shape {x_bhwc.shape}. Rebuild with img_size={x_bhwc.shape[1:3]}."
            )
        if self.dtype is not None:
            x_bhwc = x_bhwc.astype(self.dtype)
        x = self.patch_embed(x_bhwc, train=train)
        for k, stage in enumerate(self.stages):
            if k >= 2 and tuple(x.shape[1:3]) != self.grids[k]:
                raise ValueError(
                    f"stage {k} expects a {self.grids[k]} token grid but got {x.shape[1:3]}: use an img_size "
                    "divisible by 32"
                )
            x = stage(x, train=train, rngs=rngs)
        return x

    def forward_head(self, features_bhwc: jax.Array, *, pre_logits: bool = False) -> jax.Array:
        """Mean over tokens -> LayerNorm -> Linear (official `head(norm_head(x.mean(1)))`)."""
        x = self.norm_head(features_bhwc.mean(axis=(1, 2)))
        if pre_logits or self.head is None:
            return x
        return self.head(x)

    def __call__(self, x_bhwc: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Images [batch, H, W, C] (normalised with the ImageNet mean/std) -> logits [batch, num_classes].

        `train=True` uses batch statistics in BatchNorm (updating the running averages) and applies drop path, with
        the model's forked "dropout" streams or, if given, `rngs`; `train=False` (the default) uses the running
        statistics and is deterministic. The explicit flag wins over `model.train()` / `model.eval()`.
        """
        return self.forward_head(self.forward_features(x_bhwc, train=train, rngs=rngs))
