"""OpenAI CLIP (Radford et al., 2021) image and text towers in Flax NNX.

Parameter paths mirror the OpenAI / open_clip state dict: `visual.conv1`, `visual.class_embedding`,
`visual.positional_embedding`, `visual.ln_pre`, `visual.transformer.resblocks.N.{ln_1, attn.in_proj, attn.out_proj,
ln_2, mlp.c_fc, mlp.c_proj}`, `visual.ln_post`, `visual.proj`; the text tower sits under `text.` (open_clip keeps it at
the top level: `token_embedding`, `positional_embedding`, `transformer`, `ln_final`, `text_projection`), then
`logit_scale`. Images are NHWC floats normalised with CLIP's mean/std; tokens are int32 [batch, context_length].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import kernels
from models.vit.layers import (
    SPEC_COLUMN_PARALLEL,
    SPEC_ROW_PARALLEL,
    DropPath,
    check_image_input,
    partitioned,
    sharding_scope,
)

_normal = nnx.initializers.normal


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x): the activation OpenAI CLIP was trained with."""
    return x * jax.nn.sigmoid(1.702 * x)


def _activation(name: str):
    if name == "quick_gelu":
        return quick_gelu
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"act must be 'quick_gelu' (OpenAI weights) or 'gelu' (most LAION open_clip weights); got {name!r}")


class MultiheadAttention(nnx.Module):
    """torch `nn.MultiheadAttention` layout: fused `in_proj` ([q; k; v] on the output axis) and `out_proj`."""

    def __init__(self, dim: int, num_heads: int, *, attention_impl: str, dtype: Any, param_dtype: Any, rngs):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention_impl = attention_impl
        self.in_proj = nnx.Linear(
            dim, 3 * dim, kernel_init=partitioned(_normal(dim**-0.5), SPEC_COLUMN_PARALLEL),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        self.out_proj = nnx.Linear(
            dim, dim, kernel_init=partitioned(_normal(dim**-0.5), SPEC_ROW_PARALLEL),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        batch, seq, dim = x.shape
        qkv = self.in_proj(x).reshape(batch, seq, 3, self.num_heads, self.head_dim)
        out = kernels.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask, impl=self.attention_impl)
        return self.out_proj(out.reshape(batch, seq, dim))


class ClipMlp(nnx.Module):
    """c_fc -> activation -> c_proj."""

    def __init__(self, dim: int, hidden: int, *, act: str, dtype: Any, param_dtype: Any, rngs):
        self.act = act
        self.c_fc = nnx.Linear(
            dim, hidden, kernel_init=partitioned(_normal(dim**-0.5), SPEC_COLUMN_PARALLEL),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        self.c_proj = nnx.Linear(
            hidden, dim, kernel_init=partitioned(_normal(hidden**-0.5), SPEC_ROW_PARALLEL),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(_activation(self.act)(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); LayerNorm eps 1e-5 as torch's default."""

    def __init__(
        self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, act: str = "quick_gelu",
        drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.ln_1 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs, **common)
        self.attn = MultiheadAttention(dim, num_heads, attention_impl=attention_impl, rngs=rngs, **common)
        self.ln_2 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs, **common)
        self.mlp = ClipMlp(dim, int(dim * mlp_ratio), act=act, rngs=rngs, **common)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None, train: bool = False, rngs=None):
        x = x + self.drop_path(self.attn(self.ln_1(x), mask=mask), train=train, rngs=rngs)
        return x + self.drop_path(self.mlp(self.ln_2(x)), train=train, rngs=rngs)


class Transformer(nnx.Module):
    """A stack of `ResidualAttentionBlock`s (`transformer.resblocks`)."""

    def __init__(self, width: int, layers: int, heads: int, *, drop_path_rate: float = 0.0, rngs, **kwargs):
        rates = [drop_path_rate * i / max(layers - 1, 1) for i in range(layers)]
        self.resblocks = nnx.List([
            ResidualAttentionBlock(width, heads, drop_path_rate=rates[i], rngs=rngs, **kwargs) for i in range(layers)
        ])

    def __call__(self, x, *, mask=None, train: bool = False, rngs=None, return_hidden_states: bool = False):
        hidden_states = []
        for block in self.resblocks:
            x = block(x, mask=mask, train=train, rngs=rngs)
            hidden_states.append(x)
        return (x, hidden_states) if return_hidden_states else x


class VisionTower(nnx.Module):
    """CLIP image encoder: conv1 (no bias) -> [class; patches] + positional_embedding -> ln_pre -> blocks -> ln_post."""

    def __init__(
        self, *, img_size: int = 224, patch_size: int = 32, width: int = 768, layers: int = 12, heads: int = 12,
        output_dim: int = 512, in_chans: int = 3, act: str = "quick_gelu", drop_path_rate: float = 0.0,
        attention_impl: str = "auto", dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size = (img_size, img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.width = width
        self.output_dim = output_dim
        common = {"dtype": dtype, "param_dtype": param_dtype}
        scale = width**-0.5
        self.conv1 = nnx.Conv(
            in_chans, width, kernel_size=(patch_size, patch_size), strides=(patch_size, patch_size),
            padding="VALID", use_bias=False, rngs=rngs, **common,
        )
        num_tokens = self.grid_size[0] * self.grid_size[1] + 1
        self.class_embedding = nnx.Param(_normal(scale)(rngs.params(), (width,), param_dtype))
        self.positional_embedding = nnx.Param(_normal(scale)(rngs.params(), (num_tokens, width), param_dtype))
        self.ln_pre = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **common)
        self.transformer = Transformer(
            width, layers, heads, act=act, drop_path_rate=drop_path_rate, attention_impl=attention_impl,
            rngs=rngs, **common,
        )
        self.ln_post = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **common)
        self.proj = nnx.Param(_normal(scale)(rngs.params(), (width, output_dim), param_dtype))

    def embed(self, images: jax.Array) -> jax.Array:
        """ln_pre([class; patches] + positional_embedding): [batch, 1 + grid_h * grid_w, width]."""
        check_image_input(images, img_size=self.img_size, in_chans=self.in_chans, model="CLIP image tower")
        x = self.conv1(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...].astype(x.dtype)
        return self.ln_pre(x)

    def forward_features(
        self, images: jax.Array, *, return_hidden_states: bool = False, train: bool = False, rngs=None
    ):
        """All tokens after ln_post, [batch, 1 + patches, width].

        With `return_hidden_states=True` also returns a tuple of depth + 1 arrays, Hugging Face's `hidden_states`
        convention: the ln_pre output (embeddings), then every block's output (no ln_post).
        """
        embedded = self.embed(images)
        x, hidden = self.transformer(embedded, train=train, rngs=rngs, return_hidden_states=True)
        tokens = self.ln_post(x)
        return (tokens, (embedded, *hidden)) if return_hidden_states else tokens

    def __call__(self, images: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        """Image embeddings [batch, output_dim]: ln_post(class token) @ proj (not L2-normalised)."""
        tokens = self.forward_features(images, train=train, rngs=rngs)
        return tokens[:, 0] @ self.proj[...].astype(tokens.dtype)


class TextTower(nnx.Module):
    """CLIP text encoder: token + positional embedding -> causal blocks -> ln_final -> EOT token @ text_projection."""

    def __init__(
        self, *, vocab_size: int = 49408, context_length: int = 77, width: int = 512, layers: int = 12,
        heads: int = 8, output_dim: int = 512, act: str = "quick_gelu", attention_impl: str = "auto",
        dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.context_length = context_length
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.token_embedding = nnx.Embed(vocab_size, width, embedding_init=_normal(0.02), rngs=rngs, **common)
        self.positional_embedding = nnx.Param(_normal(0.01)(rngs.params(), (context_length, width), param_dtype))
        self.transformer = Transformer(width, layers, heads, act=act, attention_impl=attention_impl, rngs=rngs, **common)
        self.ln_final = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **common)
        self.text_projection = nnx.Param(_normal(width**-0.5)(rngs.params(), (width, output_dim), param_dtype))

    def forward_features(self, tokens: jax.Array, *, return_hidden_states: bool = False):
        """All token features after ln_final, [batch, seq, width] (causal: token t sees tokens <= t)."""
        if getattr(tokens, "ndim", None) != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"CLIP text tower expects integer token ids of shape (batch, <= {self.context_length}); got "
                f"{getattr(tokens, 'dtype', type(tokens).__name__)} {getattr(tokens, 'shape', None)}"
            )
        seq = tokens.shape[1]
        if seq > self.context_length:
            raise ValueError(f"token sequences are at most {self.context_length} long; got {seq}")
        x = self.token_embedding(tokens)
        x = x + self.positional_embedding[...][:seq].astype(x.dtype)
        causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
        x, hidden = self.transformer(x, mask=causal, return_hidden_states=True)
        x = self.ln_final(x)
        return (x, tuple(hidden)) if return_hidden_states else x

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Text embeddings [batch, output_dim]: the feature at the end-of-text token (the highest id) @ projection."""
        x = self.forward_features(tokens)
        eot = jnp.argmax(tokens, axis=-1)
        pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
        return pooled @ self.text_projection[...].astype(pooled.dtype)


class CLIP(nnx.Module):
    """Contrastive image-text model: `visual` image tower, `text` tower and a learned `logit_scale` (log temperature).

    `__call__(images, tokens)` returns logits_per_image [num_images, num_texts] = exp(logit_scale) * cosine
    similarity (logits_per_text is its transpose).
    """

    def __init__(
        self, *, embed_dim: int = 512, img_size: int = 224, patch_size: int = 32, vision_width: int = 768,
        vision_layers: int = 12, vision_heads: int | None = None, context_length: int = 77, vocab_size: int = 49408,
        text_width: int = 512, text_layers: int = 12, text_heads: int | None = None, act: str = "quick_gelu",
        drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        common = {"act": act, "attention_impl": attention_impl, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.embed_dim = embed_dim
        with sharding_scope():
            self.visual = VisionTower(
                img_size=img_size, patch_size=patch_size, width=vision_width, layers=vision_layers,
                heads=vision_heads or vision_width // 64, output_dim=embed_dim, drop_path_rate=drop_path_rate,
                **common,
            )
            self.text = TextTower(
                vocab_size=vocab_size, context_length=context_length, width=text_width, layers=text_layers,
                heads=text_heads or text_width // 64, output_dim=embed_dim, **common,
            )
        self.logit_scale = nnx.Param(jnp.full((), jnp.log(1 / 0.07), dtype=param_dtype))

    def forward_features(self, images: jax.Array, **kwargs) -> jax.Array:
        """The image tower's tokens after ln_post (see `VisionTower.forward_features`)."""
        return self.visual.forward_features(images, **kwargs)

    def encode_image(self, images: jax.Array, *, normalize: bool = False, train: bool = False, rngs=None):
        """Image embeddings [batch, embed_dim] (L2-normalised when `normalize`)."""
        features = self.visual(images, train=train, rngs=rngs)
        return _l2_normalize(features) if normalize else features

    def encode_text(self, tokens: jax.Array, *, normalize: bool = False) -> jax.Array:
        """Text embeddings [batch, embed_dim] (L2-normalised when `normalize`)."""
        features = self.text(tokens)
        return _l2_normalize(features) if normalize else features

    def __call__(self, images: jax.Array, tokens: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        image = self.encode_image(images, normalize=True, train=train, rngs=rngs)
        text = self.encode_text(tokens, normalize=True)
        return jnp.exp(self.logit_scale[...]).astype(image.dtype) * image @ text.T


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True).astype(x.dtype)
