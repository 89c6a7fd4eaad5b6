"""Vision Transformer (Dosovitskiy et al., 2021) in Flax NNX, with timm's module layout and numerics.

Parameter paths mirror timm's state-dict keys (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`,
`blocks.N.mlp.fc1`, `norm`, `fc_norm`, `head`), so the converter is a plain key map. Inputs are NHWC floats. The
attention, MLP, patch embedding, LayerNorm and drop layers are the shared ones of `models.layers`; this file holds
only the ViT block and model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import (
    Attention,
    Dropout,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbed,
    check_image_input,
    layer_norm,
    sharding_scope,
    to_pair,
    trunc_normal_002,
)

# First path components of the parameters that come before the blocks (layer id 0 for layer-wise LR decay).
_EMBEDDING_PARAMS = frozenset({"patch_embed", "cls_token", "pos_embed", "reg_token"})


class Block(nnx.Module):
    """Pre-norm transformer block: x + DropPath(LS(attn(LN(x)))), then x + DropPath(LS(mlp(LN(x))))."""

    def __init__(
        self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        init_values: float | None = None, proj_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6, attention_impl: str = "auto", kernel_init: Any = trunc_normal_002, dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.norm1 = layer_norm(dim, eps=norm_eps, rngs=rngs, **common)
        # timm's ViT init: trunc normal .02 for every Linear (qkv/proj, fc1/fc2), zero biases; `kernel_init` replaces
        # it for fresh weights of models initialised otherwise (MAE / MaskAlign: xavier uniform).
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, proj_drop_rate=proj_drop_rate, kernel_init=kernel_init,
            attention_impl=attention_impl, rngs=rngs, **common,
        )
        self.ls1 = LayerScale(dim, init_values, param_dtype=param_dtype) if init_values else None
        self.norm2 = layer_norm(dim, eps=norm_eps, rngs=rngs, **common)
        self.mlp = Mlp(
            dim, int(dim * mlp_ratio), act="gelu", drop_rate=proj_drop_rate, fc1_init=kernel_init,
            fc2_init=kernel_init, rngs=rngs, **common,
        )
        self.ls2 = LayerScale(dim, init_values, param_dtype=param_dtype) if init_values else None
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        y = self.attn(self.norm1(x), train=train, rngs=rngs)
        if self.ls1 is not None:
            y = self.ls1(y)
        x = x + self.drop_path(y, train=train, rngs=rngs)
        y = self.mlp(self.norm2(x), train=train, rngs=rngs)
        if self.ls2 is not None:
            y = self.ls2(y)
        return x + self.drop_path(y, train=train, rngs=rngs)


class VisionTransformer(nnx.Module):
    """timm-compatible ViT classifier / backbone.

    Args:
      img_size, patch_size, in_chans: input geometry; inputs are [batch, height, width, in_chans] floats.
      num_classes: head size; 0 gives no head (`__call__` returns pooled features).
      global_pool: "token" (class token), "avg" (mean of patch tokens, with `fc_norm` instead of `norm`) or "".
      class_token: prepend a learned class token (timm `cls_token`).
      embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size.
      init_values: layer-scale init (None = no layer scale).
      drop_rate: dropout before the head; pos_drop_rate after the position embedding; proj_drop_rate after the
        attention and MLP projections; drop_path_rate: stochastic depth, linearly increasing over the blocks.
      attention_impl: passed to `kernels.attention` ("auto", "xla", "pallas").
      dtype, param_dtype: compute and parameter dtypes (e.g. bf16 compute with f32 params).
      rngs: `nnx.Rngs`; a "dropout" stream is forked only when some dropout / drop path rate is > 0.
    """

    def __init__(
        self, *, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16, in_chans: int = 3,
        num_classes: int = 1000, global_pool: str = "token", class_token: bool = True, embed_dim: int = 768,
        depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        init_values: float | None = None, fc_norm: bool | None = None, norm_eps: float = 1e-6,
        drop_rate: float = 0.0, pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or ''; got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a class token")
        self.img_size = to_pair(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.dtype = dtype
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        common = {"dtype": dtype, "param_dtype": param_dtype}
        with sharding_scope():
            self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, img_size=self.img_size, rngs=rngs, **common)
            self.grid_size = self.patch_embed.grid_size
            num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
            self.cls_token = (
                nnx.Param(nnx.initializers.normal(1e-6)(rngs.params(), (1, 1, embed_dim), param_dtype))
                if class_token else None
            )
            self.pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, num_tokens, embed_dim), param_dtype))
            self.pos_drop = Dropout(pos_drop_rate, rngs=rngs)
            rates = np.linspace(0.0, drop_path_rate, depth).tolist()
            self.blocks = nnx.List([
                Block(
                    embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values,
                    proj_drop_rate=proj_drop_rate, drop_path_rate=rates[i], norm_eps=norm_eps,
                    attention_impl=attention_impl, rngs=rngs, **common,
                )
                for i in range(depth)
            ])
            self.norm = None if use_fc_norm else layer_norm(embed_dim, eps=norm_eps, rngs=rngs, **common)
            self.fc_norm = layer_norm(embed_dim, eps=norm_eps, rngs=rngs, **common) if use_fc_norm else None
            self.head_drop = Dropout(drop_rate, rngs=rngs)
            self.head = (
                nnx.Linear(embed_dim, num_classes, kernel_init=trunc_normal_002, rngs=rngs, **common)
                if num_classes > 0 else None
            )

    def max_layer_id(self) -> int:
        """The layer id of everything after the blocks (final norm, head): depth + 1 (BEiT / timm convention)."""
        return len(self.blocks) + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted NNX `path` (e.g. "blocks.3.attn.qkv.kernel").

        0 for the embeddings (patch_embed, cls_token, pos_embed, reg_token), i + 1 for block i, `max_layer_id()` for
        everything after the blocks (norm, fc_norm, head), as timm's / BEiT's `param_groups_lrd`.
        """
        parts = path.split(".")
        if parts[0] in _EMBEDDING_PARAMS:
            return 0
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        return self.max_layer_id()

    def embed(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """Patch tokens + class token + position embedding: [batch, prefix + patches, dim]."""
        check_image_input(x, img_size=self.img_size, in_chans=self.in_chans, model=type(self).__name__)
        x = self.patch_embed(x)
        dtype = x.dtype
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...].astype(dtype), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        x = x + self.pos_embed[...].astype(dtype)
        return self.pos_drop(x, train=train, rngs=rngs)

    def forward_features(
        self, x: jax.Array, *, train: bool = False, return_hidden_states: bool = False, rngs=None
    ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        """All tokens after the final norm, [batch, prefix + patches, dim] (no norm with `fc_norm` models).

        With `return_hidden_states=True` also returns the list of every block's output (before the final norm).
        """
        x = self.embed(x, train=train, rngs=rngs)
        hidden_states = []
        for block in self.blocks:
            x = block(x, train=train, rngs=rngs)
            hidden_states.append(x)
        if self.norm is not None:
            x = self.norm(x)
        return (x, hidden_states) if return_hidden_states else x

    def forward_head(
        self, tokens: jax.Array, *, pre_logits: bool = False, train: bool = False, rngs=None
    ) -> jax.Array:
        """Pool the tokens ("token" or "avg"), apply `fc_norm`, dropout and the head (unless `pre_logits`)."""
        if self.global_pool == "token":
            x = tokens[:, 0]
        elif self.global_pool == "avg":
            x = tokens[:, self.num_prefix_tokens:].mean(axis=1)
        else:
            x = tokens
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        x = self.head_drop(x, train=train, rngs=rngs)
        if pre_logits or self.head is None:
            return x
        return self.head(x)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """Logits [batch, num_classes] (pooled features when num_classes == 0)."""
        return self.forward_head(self.forward_features(x, train=train, rngs=rngs), train=train, rngs=rngs)
