"""OpenAI CLIP (Radford et al., 2021) image and text towers in Flax NNX.

The towers follow the OpenAI / open_clip module tree (`visual.class_embedding`, `visual.positional_embedding`,
`visual.ln_pre`, `visual.transformer.resblocks.N.{ln_1, attn, ln_2, mlp}`, `visual.ln_post`, `visual.proj`; the text
tower under `text.`: `token_embedding`, `positional_embedding`, `transformer`, `ln_final`, `text_projection`; then
`logit_scale`), built from the shared `models.layers`, whose names differ from torch's in four places:
`visual.patch_embed.proj` (torch `visual.conv1`), `attn.qkv` / `attn.proj` (`attn.in_proj` / `attn.out_proj`) and
`mlp.fc1` / `mlp.fc2` (`mlp.c_fc` / `mlp.c_proj`); `convert.py` maps them. open_clip keeps the text tower at the top
level of its state dict. Images are NHWC floats normalised with CLIP's mean/std; tokens are int32
[batch, context_length].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    check_image_input,
    layer_norm,
    sharding_scope,
)

_normal = nnx.initializers.normal
_LN_EPS = 1e-5  # torch's nn.LayerNorm default, which CLIP uses everywhere
_ACTS = ("quick_gelu", "gelu")
# First path components of each tower's parameters before its blocks (layer id 0 for layer-wise LR decay).
_VISION_EMBEDDINGS = frozenset({"patch_embed", "class_embedding", "positional_embedding", "ln_pre"})
_TEXT_EMBEDDINGS = frozenset({"token_embedding", "positional_embedding"})


def _tower_layer_id(path: str, embeddings: frozenset[str], last: int) -> int:
    """BEiT / timm layer id of a tower's parameter: 0 for `embeddings`, i + 1 for `transformer.resblocks.i`, else
    `last` (the norm and projection after the blocks)."""
    parts = path.split(".")
    if parts[0] in embeddings:
        return 0
    if parts[:2] == ["transformer", "resblocks"]:
        return int(parts[2]) + 1
    return last


class ResidualAttentionBlock(nnx.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); LayerNorm eps 1e-5 as torch's default."""

    def __init__(
        self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, act: str = "quick_gelu",
        drop_path_rate: float = 0.0, attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        if act not in _ACTS:
            raise ValueError(
                f"act must be 'quick_gelu' (OpenAI weights) or 'gelu' (most LAION open_clip weights); got {act!r}"
            )
        common = {"dtype": dtype, "param_dtype": param_dtype}
        hidden = int(dim * mlp_ratio)
        self.ln_1 = layer_norm(dim, eps=_LN_EPS, rngs=rngs, **common)
        # OpenAI's init: normal(width^-0.5) for the attention projections and c_fc, normal(hidden^-0.5) for c_proj.
        self.attn = Attention(
            dim, num_heads, kernel_init=_normal(dim**-0.5), attention_impl=attention_impl, rngs=rngs, **common,
        )
        self.ln_2 = layer_norm(dim, eps=_LN_EPS, rngs=rngs, **common)
        self.mlp = Mlp(
            dim, hidden, act=act, fc1_init=_normal(dim**-0.5), fc2_init=_normal(hidden**-0.5), rngs=rngs, **common,
        )
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
    """CLIP image encoder: patch_embed (torch `conv1`, no bias) -> [class; patches] + positional_embedding -> ln_pre ->
    blocks -> ln_post; `__call__` projects the class token with `proj`."""

    def __init__(
        self, *, img_size: int = 224, patch_size: int = 32, width: int = 768, layers: int = 12, heads: int = 12,
        output_dim: int = 512, in_chans: int = 3, act: str = "quick_gelu", drop_path_rate: float = 0.0,
        attention_impl: str = "auto", dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        self.img_size = (img_size, img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.width = width
        self.output_dim = output_dim
        self.depth = layers
        common = {"dtype": dtype, "param_dtype": param_dtype}
        scale = width**-0.5
        # Raises for an img_size the patches do not tile. Default (lecun normal) kernel init, as the old conv1.
        self.patch_embed = PatchEmbed(
            patch_size, in_chans, width, img_size=img_size, use_bias=False, rngs=rngs, **common,
        )
        self.grid_size = self.patch_embed.grid_size
        num_tokens = self.patch_embed.num_patches + 1
        self.class_embedding = nnx.Param(_normal(scale)(rngs.params(), (width,), param_dtype))
        self.positional_embedding = nnx.Param(_normal(scale)(rngs.params(), (num_tokens, width), param_dtype))
        self.ln_pre = layer_norm(width, eps=_LN_EPS, rngs=rngs, **common)
        self.transformer = Transformer(
            width, layers, heads, act=act, drop_path_rate=drop_path_rate, attention_impl=attention_impl,
            rngs=rngs, **common,
        )
        self.ln_post = layer_norm(width, eps=_LN_EPS, rngs=rngs, **common)
        self.proj = nnx.Param(_normal(scale)(rngs.params(), (width, output_dim), param_dtype))

    def max_layer_id(self) -> int:
        """The layer id of ln_post and proj, after the blocks: layers + 1 (BEiT / timm convention)."""
        return self.depth + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted `path` relative to the tower.

        0 for the embeddings (patch_embed = torch `conv1`, class_embedding, positional_embedding, ln_pre), i + 1 for
        `transformer.resblocks.i`, `max_layer_id()` for ln_post and proj.
        """
        return _tower_layer_id(path, _VISION_EMBEDDINGS, self.max_layer_id())

    def embed(self, images: jax.Array) -> jax.Array:
        """ln_pre([class; patches] + positional_embedding): [batch, 1 + grid_h * grid_w, width]."""
        check_image_input(images, img_size=self.img_size, in_chans=self.in_chans, model="CLIP image tower")
        x = self.patch_embed(images)
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
        self.depth = layers
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.token_embedding = nnx.Embed(vocab_size, width, embedding_init=_normal(0.02), rngs=rngs, **common)
        self.positional_embedding = nnx.Param(_normal(0.01)(rngs.params(), (context_length, width), param_dtype))
        self.transformer = Transformer(width, layers, heads, act=act, attention_impl=attention_impl, rngs=rngs, **common)
        self.ln_final = layer_norm(width, eps=_LN_EPS, rngs=rngs, **common)
        self.text_projection = nnx.Param(_normal(width**-0.5)(rngs.params(), (width, output_dim), param_dtype))

    def max_layer_id(self) -> int:
        """The layer id of ln_final and text_projection, after the blocks: layers + 1."""
        return self.depth + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted `path` relative to the tower: 0 for token_embedding and
        positional_embedding, i + 1 for `transformer.resblocks.i`, `max_layer_id()` for ln_final and
        text_projection."""
        return _tower_layer_id(path, _TEXT_EMBEDDINGS, self.max_layer_id())

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



def tower_layer_id(model: nnx.Module, path: str) -> int:
    """Layer id of dotted `path` in a model with `visual` and `text` towers (either may be None) and
    `max_layer_id()`: the tower's own id (0 embeddings, i + 1 block i), its last id and everything outside the
    towers mapped to the model's `max_layer_id()`."""
    tower_name, _, rest = path.partition(".")
    tower = {"visual": model.visual, "text": getattr(model, "text", None)}.get(tower_name)
    if tower is None:
        return model.max_layer_id()
    tower_id = tower.layer_id(rest)
    return model.max_layer_id() if tower_id == tower.max_layer_id() else tower_id

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

    def max_layer_id(self) -> int:
        """The layer id of everything after the blocks: the deeper tower's layers + 1 (the image tower's for every
        registered variant), so that no text block shares the id of the final norms and projections."""
        return max(self.visual.depth, self.text.depth) + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at dotted `path` (e.g. "visual.transformer.resblocks.3.attn.qkv
        .kernel"), the BEiT / timm convention applied to each tower over its own blocks.

        0 for the embeddings (`visual.`: patch_embed, class_embedding, positional_embedding, ln_pre; `text.`:
        token_embedding, positional_embedding), i + 1 for block i of either tower (`*.transformer.resblocks.i`), and
        `max_layer_id()` for the rest (ln_post, proj, ln_final, text_projection, logit_scale).
        """
        return tower_layer_id(self, path)

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
