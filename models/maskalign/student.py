"""MaskAlign's student: a timm-layout ViT that encodes only the visible patches (plus the class token).

There is no mask token and no decoder: the masked patches are dropped after the patch embedding, as in MAE's encoder.
The position embedding is the fixed 2-D sin-cos table of MAE (`get_2d_sincos_pos_embed`, a zero class slot), held as
a `models.layers.Buffer`, a non-trainable variable: the official model keeps it at `requires_grad=False` for the whole
pre-training, so it is no parameter of ours either (an optimizer, a weight-decay mask or a parameter count never sees
it and no task has to remember to freeze it), yet it is part of the model state, converted from the checkpoint's
`pos_embed` and saved with the model. Parameter paths follow timm (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`), so the converter is a key map.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import Buffer, PatchEmbed, check_image_input, layer_norm, sharding_scope, to_pair
from models.vit.model import Block

# MAE / MaskAlign init: xavier uniform for every Linear (official "following official JAX ViT"), zero biases.
xavier_uniform = nnx.initializers.xavier_uniform()
# The patch embedding is initialised "like nn.Linear": xavier over (in_chans * kh * kw) -> embed_dim.
patch_embed_init = nnx.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)

_EMBEDDINGS = frozenset({"patch_embed", "cls_token", "pos_embed"})


def get_1d_sincos_pos_embed(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """[M, embed_dim] float64: sin(p * omega) then cos(p * omega), omega_d = 10000^(-d / (embed_dim / 2))."""
    if embed_dim % 2:
        raise ValueError(f"a sin-cos position embedding needs an even width; got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int | tuple[int, int], *, cls_token: bool = False) -> np.ndarray:
    """MAE's fixed 2-D sin-cos table, [(1 +) gh * gw, embed_dim] float64 (a zero row first with `cls_token`).

    The first half of the channels encodes the column index, the second half the row index (MAE's meshgrid with
    "w goes first"), row-major over the grid, with MAE's float32 grid coordinates and float64 frequencies.
    """
    if embed_dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4; got {embed_dim}")
    grid_h, grid_w = to_pair(grid_size)
    rows = np.arange(grid_h, dtype=np.float32)
    cols = np.arange(grid_w, dtype=np.float32)
    grid = np.stack(np.meshgrid(cols, rows), axis=0).reshape(2, 1, grid_h, grid_w)
    emb = np.concatenate(
        [get_1d_sincos_pos_embed(embed_dim // 2, grid[0]), get_1d_sincos_pos_embed(embed_dim // 2, grid[1])], axis=1
    )
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return emb


def gather_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
    """x[b, ids[b, j], :] for a [B, L, C] array and [B, K] integer ids: [B, K, C]."""
    return jnp.take_along_axis(x, ids[..., None].astype(jnp.int32), axis=1)


def check_keep_ids(ids_keep: Any, *, batch: int, num_patches: int, num_keep: int | None = None) -> None:
    """A ValueError unless `ids_keep` is an integer [batch, num_keep] array (shape checks only: values are traced)."""
    shape = getattr(ids_keep, "shape", None)
    dtype = getattr(ids_keep, "dtype", None)
    want = f"an integer array of shape (batch={batch}, {num_keep if num_keep is not None else 'num_keep'})"
    if shape is None or dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"ids_keep must be {want} of patch indices in [0, {num_patches}); got {dtype} {shape}")
    if len(shape) != 2 or shape[0] != batch or (num_keep is not None and shape[1] != num_keep):
        raise ValueError(f"ids_keep must be {want}; got shape {tuple(shape)}")
    if shape[1] > num_patches:
        raise ValueError(f"ids_keep keeps {shape[1]} patches of {num_patches}")


class MaskAlignStudent(nnx.Module):
    """ViT encoder of the visible patches (MAE's `forward_encoder` without the mask token).

    Args:
      img_size, patch_size, in_chans: input geometry (NHWC float images, ImageNet-normalised).
      embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size (timm blocks, LayerNorm eps `norm_eps`).
      drop_path_rate: stochastic depth, linearly increasing over the blocks (official `--drop_path`).
      attention_impl, dtype, param_dtype: as every zoo model.
      rngs: `nnx.Rngs`; a "dropout" stream is forked only with drop_path_rate > 0.
    """

    def __init__(
        self, *, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
        embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        norm_eps: float = 1e-6, drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        self.img_size = to_pair(img_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.norm_eps = norm_eps
        common = {"dtype": dtype, "param_dtype": param_dtype}
        with sharding_scope():
            self.patch_embed = PatchEmbed(
                patch_size, in_chans, embed_dim, img_size=self.img_size, kernel_init=patch_embed_init, rngs=rngs,
                **common,
            )
            self.grid_size = self.patch_embed.grid_size
            self.num_patches = self.patch_embed.num_patches
            self.cls_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, embed_dim), param_dtype))
            table = get_2d_sincos_pos_embed(embed_dim, self.grid_size, cls_token=True)
            self.pos_embed = Buffer(jnp.asarray(table[None], jnp.float32).astype(param_dtype))
            rates = np.linspace(0.0, drop_path_rate, depth).tolist()
            self.blocks = nnx.List([
                Block(
                    embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=rates[i],
                    norm_eps=norm_eps, attention_impl=attention_impl, kernel_init=xavier_uniform, rngs=rngs,
                    **common,
                )
                for i in range(depth)
            ])
            # In the official state dict; the loss reads the raw block outputs, never this norm.
            self.norm = layer_norm(embed_dim, eps=norm_eps, rngs=rngs, **common)

    def max_layer_id(self) -> int:
        """The layer id of everything after the blocks (norm): depth + 1 (BEiT / timm convention)."""
        return self.depth + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted `path`: 0 for patch_embed / cls_token / pos_embed, i + 1
        for `blocks.i`, `max_layer_id()` for the final norm (as `VisionTransformer.layer_id`)."""
        parts = path.split(".")
        if parts[0] in _EMBEDDINGS:
            return 0
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        return self.max_layer_id()

    def embed(self, images: jax.Array, ids_keep: jax.Array | None = None) -> jax.Array:
        """[cls + pos[0]; visible patches + their pos]: [B, 1 + K, D] (all L patches when `ids_keep` is None)."""
        check_image_input(images, img_size=self.img_size, in_chans=self.in_chans, model="MaskAlign student")
        x = self.patch_embed(images)
        pos = self.pos_embed[...].astype(x.dtype)
        x = x + pos[:, 1:]
        if ids_keep is not None:
            check_keep_ids(ids_keep, batch=x.shape[0], num_patches=self.num_patches)
            x = gather_tokens(x, ids_keep)
        cls = self.cls_token[...].astype(x.dtype) + pos[:, :1]
        return jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)

    def forward_features(
        self, images: jax.Array, ids_keep: jax.Array | None = None, *, return_hidden_states: bool = False,
        train: bool = False, rngs=None,
    ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        """Tokens after the final norm, [B, 1 + K, D]; with `return_hidden_states` also every block's raw output
        (the list MaskAlign aligns, before the final norm)."""
        x = self.embed(images, ids_keep)
        hidden_states = []
        for block in self.blocks:
            x = block(x, train=train, rngs=rngs)
            hidden_states.append(x)
        x = self.norm(x)
        return (x, hidden_states) if return_hidden_states else x

    def __call__(self, images: jax.Array, ids_keep: jax.Array | None = None, *, train: bool = False,
                 rngs=None) -> list[jax.Array]:
        """The raw outputs of the `depth` blocks on cls + visible patches, each [B, 1 + K, D]."""
        return self.forward_features(images, ids_keep, return_hidden_states=True, train=train, rngs=rngs)[1]
