"""BERT-style text encoders (RoBERTa, BERT, MiniLM) in Flax NNX, built from the shared `models.layers`.

One post-LN transformer encoder with two settings:
- RoBERTa (fairseq / HF `RobertaModel`): learned positions offset by the padding index (position ids =
  cumsum(not pad) * (not pad) + pad_token_id, so the first real token sits at row pad_token_id + 1 and padding rows
  at pad_token_id), LayerNorm eps 1e-5;
- BERT / MiniLM (HF `BertModel`): absolute positions 0..N-1, LayerNorm eps 1e-12.

Embeddings: word + position + token type, LayerNorm, dropout. Each layer: self-attention (separate q/k/v,
`models.layers.Attention(fused=False)`, key-padding mask through `kernels.attention`'s `mask=`), dropout, residual,
LayerNorm; erf-GELU MLP (`models.layers.Mlp`), dropout, residual, LayerNorm. Optional pooler: tanh(dense(token 0)).

Parameter names (HF's in brackets; `convert.py` maps them): `embeddings.word_embeddings` / `position_embeddings` /
`token_type_embeddings` (same), `embeddings.norm` (`embeddings.LayerNorm`), `layers.N.attn.q_proj/k_proj/v_proj`
(`encoder.layer.N.attention.self.query/key/value`), `layers.N.attn.proj` (`attention.output.dense`),
`layers.N.attn_norm` (`attention.output.LayerNorm`), `layers.N.mlp.fc1` (`intermediate.dense`), `layers.N.mlp.fc2`
(`output.dense`), `layers.N.mlp_norm` (`output.LayerNorm`), `pooler.dense` (same).

SAMWISE interleaves the text layers with Hiera stages, so the stack is usable one layer at a time:

    x = encoder.embed(tokens, mask)
    for i in range(encoder.num_layers):
        x = encoder.layer(i)(x, mask)        # or: for layer in encoder.layers: x = layer(x, mask)

`encoder(tokens, mask)` runs the whole stack and returns a `TextEncoderOutput`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import Attention, Dropout, Mlp, layer_norm, sharding_scope

_init = nnx.initializers.normal(0.02)  # HF BERT / RoBERTa (and fairseq init_bert_params): normal(0.02), zero bias
POSITION_STYLES = ("roberta", "absolute")


class TextEncoderOutput(NamedTuple):
    """What `TextEncoder.__call__` returns (a pytree, so it passes through `jax.jit`).

    last_hidden_state: [batch, seq, hidden] after the last layer.
    pooler_output: [batch, hidden] tanh(dense(token 0)), or None without a pooler.
    hidden_states: with `return_hidden_states=True`, num_layers + 1 arrays (HF's convention: the embeddings output,
      then every layer's output); else None.
    """

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None


def key_padding_mask(mask: jax.Array | None) -> jax.Array | None:
    """[batch, seq] attention mask (1/True = a real token) -> the boolean [batch, 1, 1, seq] `kernels.attention` mask."""
    if mask is None:
        return None
    return (jnp.asarray(mask) != 0)[:, None, None, :]


def mean_pool(hidden: jax.Array, mask: jax.Array, *, normalize: bool = True) -> jax.Array:
    """sentence-transformers' mean pooling: the average of the real tokens' vectors (`mask` [batch, seq]), then L2
    normalised when `normalize` (all-MiniLM-L6-v2's `Normalize` module). float32 [batch, hidden]."""
    weights = (jnp.asarray(mask) != 0).astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    pooled = summed / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)  # the clamp of sentence-transformers' Pooling
    if normalize:
        pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)  # F.normalize's eps
    return pooled


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


class TextEmbeddings(nnx.Module):
    """word + position + token-type embeddings -> LayerNorm -> dropout (HF `BertEmbeddings` / `RobertaEmbeddings`)."""

    def __init__(
        self, *, vocab_size: int, hidden_size: int, max_position_embeddings: int, type_vocab_size: int,
        pad_token_id: int, position_style: str, layer_norm_eps: float, dropout_rate: float, dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        if position_style not in POSITION_STYLES:
            raise ValueError(f"position_style must be one of {POSITION_STYLES}; got {position_style!r}")
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.position_style = position_style
        self.type_vocab_size = type_vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.word_embeddings = nnx.Embed(vocab_size, hidden_size, embedding_init=_init, **common)
        self.position_embeddings = nnx.Embed(max_position_embeddings, hidden_size, embedding_init=_init, **common)
        self.token_type_embeddings = nnx.Embed(type_vocab_size, hidden_size, embedding_init=_init, **common)
        self.norm = layer_norm(hidden_size, eps=layer_norm_eps, **common)
        self.drop = Dropout(dropout_rate, rngs=rngs)

    @property
    def max_length(self) -> int:
        """The longest token sequence the position table holds (RoBERTa: 514 rows - pad_token_id - 1 = 512)."""
        if self.position_style == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def position_ids(self, tokens: jax.Array) -> jax.Array:
        """RoBERTa: cumsum(not pad) * (not pad) + pad_token_id (fairseq `make_positions`, computed from the tokens as
        fairseq and HF do); BERT: 0..seq-1."""
        if self.position_style == "roberta":
            real = (tokens != self.pad_token_id).astype(jnp.int32)
            return jnp.cumsum(real, axis=1) * real + self.pad_token_id
        return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)

    def __call__(self, tokens: jax.Array, token_type_ids: jax.Array | None = None, *, train: bool = False,
                 rngs=None) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros(tokens.shape, jnp.int32)
        x = self.word_embeddings(tokens) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(self.position_ids(tokens))
        return self.drop(self.norm(x), train=train, rngs=rngs)


class EncoderLayer(nnx.Module):
    """Post-LN encoder layer: x = LN(x + drop(attn(x))); x = LN(x + drop(fc2(gelu(fc1(x)))))."""

    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, *, layer_norm_eps: float,
        dropout_rate: float = 0.0, act: str = "gelu", attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.attn = Attention(hidden_size, num_heads, fused=False, kernel_init=_init, proj_drop_rate=dropout_rate,
                              attention_impl=attention_impl, **common)
        self.attn_norm = layer_norm(hidden_size, eps=layer_norm_eps, **common)
        # HF / fairseq drop only after the second Linear (fairseq's activation_dropout is 0): the Mlp gets rate 0
        # and the layer's own dropout follows it.
        self.mlp = Mlp(hidden_size, intermediate_size, act=act, fc1_init=_init, fc2_init=_init, **common)
        self.mlp_drop = Dropout(dropout_rate, rngs=rngs)
        self.mlp_norm = layer_norm(hidden_size, eps=layer_norm_eps, **common)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False, rngs=None) -> jax.Array:
        """x [batch, seq, hidden]; `mask` the [batch, seq] attention mask (1 = real token) or None (attend to all)."""
        attn_mask = mask if mask is None or mask.ndim == 4 else key_padding_mask(mask)
        x = self.attn_norm(x + self.attn(x, mask=attn_mask, train=train, rngs=rngs))
        y = self.mlp_drop(self.mlp(x), train=train, rngs=rngs)
        return self.mlp_norm(x + y)


class Pooler(nnx.Module):
    """tanh(dense(hidden[:, 0])): HF's pooler on the <s> / [CLS] token."""

    def __init__(self, hidden_size: int, *, dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.dense = nnx.Linear(hidden_size, hidden_size, kernel_init=_init, dtype=dtype, param_dtype=param_dtype,
                                rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))


class TextEncoder(nnx.Module):
    """A BERT-style post-LN encoder (see the module docstring).

    Args:
      vocab_size, hidden_size, num_layers, num_heads, intermediate_size: the transformer's size.
      max_position_embeddings: rows of the position table (RoBERTa: 514 = 512 + pad_token_id + 1).
      type_vocab_size: rows of the token-type table (RoBERTa 1, BERT 2).
      pad_token_id: the padding id (RoBERTa 1, BERT 0); also the default mask (`tokens != pad_token_id`).
      position_style: "roberta" (positions offset by the padding index) or "absolute" (BERT).
      layer_norm_eps: RoBERTa 1e-5, BERT 1e-12.
      dropout_rate: HF's hidden_dropout_prob (embeddings, attention output, MLP output); attention-probability
        dropout is not implemented (`kernels.attention` has none), so it is absent in training.
      add_pooling_layer: build the tanh pooler (`pooler_output`).
      attention_impl: `kernels.attention` implementation ("auto" | "xla" | "pallas").
    """

    def __init__(
        self, *, vocab_size: int = 50265, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
        intermediate_size: int = 3072, max_position_embeddings: int = 514, type_vocab_size: int = 1,
        pad_token_id: int = 1, position_style: str = "roberta", layer_norm_eps: float = 1e-5,
        dropout_rate: float = 0.1, add_pooling_layer: bool = True, act: str = "gelu", attention_impl: str = "auto",
        dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        with sharding_scope():
            self.embeddings = TextEmbeddings(
                vocab_size=vocab_size, hidden_size=hidden_size, max_position_embeddings=max_position_embeddings,
                type_vocab_size=type_vocab_size, pad_token_id=pad_token_id, position_style=position_style,
                layer_norm_eps=layer_norm_eps, dropout_rate=dropout_rate, **common,
            )
            self.layers = nnx.List([
                EncoderLayer(hidden_size, num_heads, intermediate_size, layer_norm_eps=layer_norm_eps,
                             dropout_rate=dropout_rate, act=act, attention_impl=attention_impl, **common)
                for _ in range(num_layers)
            ])
            self.pooler = Pooler(hidden_size, **common) if add_pooling_layer else None

    # ---------------------------------------------------------------------------------------------------------------
    # layer-wise LR decay (BEiT / timm convention)
    # ---------------------------------------------------------------------------------------------------------------

    def max_layer_id(self) -> int:
        """The layer id of the pooler: num_layers + 1."""
        return self.num_layers + 1

    def layer_id(self, path: str) -> int:
        """0 for `embeddings.*`, i + 1 for `layers.i.*`, `max_layer_id()` for the pooler."""
        parts = path.split(".")
        if parts[0] == "embeddings":
            return 0
        if parts[0] == "layers":
            return int(parts[1]) + 1
        return self.max_layer_id()

    # ---------------------------------------------------------------------------------------------------------------
    # forward
    # ---------------------------------------------------------------------------------------------------------------

    def check_inputs(self, tokens: Any, mask: Any = None, token_type_ids: Any = None) -> None:
        """Raise a ValueError for tokens that are not integer [batch, seq], too long, out of the vocabulary (when
        the values are concrete: under `jit` they cannot be read), or a mask / token types of another shape."""
        shape, dtype = getattr(tokens, "shape", None), getattr(tokens, "dtype", None)
        if shape is None or len(shape) != 2 or not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"the text encoder expects integer token ids of shape (batch, seq); got {dtype} {shape} (tokenise "
                "with models.text.roberta_tokenizer / bert_tokenizer)"
            )
        if shape[1] > self.embeddings.max_length:
            raise ValueError(f"token sequences are at most {self.embeddings.max_length} long; got {shape[1]} "
                             "(truncate with the tokenizer's max_length)")
        if shape[1] == 0:
            raise ValueError("token sequences are empty")
        for name, other in (("mask", mask), ("token_type_ids", token_type_ids)):
            if other is not None and tuple(getattr(other, "shape", ())) != tuple(shape):
                raise ValueError(f"{name} has shape {tuple(getattr(other, 'shape', ()))}; the tokens have {tuple(shape)}")
        if _is_concrete(tokens):
            values = np.asarray(tokens)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got values in [{low}, {high}]")
        if token_type_ids is not None and _is_concrete(token_type_ids):
            types = np.asarray(token_type_ids)
            if types.min() < 0 or types.max() >= self.embeddings.type_vocab_size:
                raise ValueError(f"token_type_ids must lie in [0, {self.embeddings.type_vocab_size})")

    def default_mask(self, tokens: jax.Array, mask: jax.Array | None) -> jax.Array:
        """`mask`, else tokens != pad_token_id (fairseq's key padding; HF's default is all ones)."""
        return (tokens != self.pad_token_id) if mask is None else mask

    def embed(self, tokens: jax.Array, mask: jax.Array | None = None, token_type_ids: jax.Array | None = None, *,
              train: bool = False, rngs=None) -> jax.Array:
        """The embeddings output [batch, seq, hidden] (the input of layer 0). `mask` is only checked here (the
        RoBERTa positions come from the tokens, as in fairseq and HF); pass it to every layer."""
        self.check_inputs(tokens, mask, token_type_ids)
        return self.embeddings(tokens, token_type_ids, train=train, rngs=rngs)

    def layer(self, index: int) -> EncoderLayer:
        """Layer `index` (0-based), callable as `layer(x, mask)`."""
        return self.layers[index]

    def pool(self, hidden: jax.Array) -> jax.Array:
        """The pooler output [batch, hidden] of a last hidden state."""
        if self.pooler is None:
            raise ValueError("this encoder was built with add_pooling_layer=False")
        return self.pooler(hidden)

    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None, token_type_ids: jax.Array | None = None, *,
                 return_hidden_states: bool = False, train: bool = False, rngs=None) -> TextEncoderOutput:
        """Run the stack: tokens int [batch, seq], `mask` [batch, seq] (1 = real token; default tokens !=
        pad_token_id), `token_type_ids` [batch, seq] (default zeros)."""
        mask = self.default_mask(tokens, mask)
        x = self.embed(tokens, mask, token_type_ids, train=train, rngs=rngs)
        attn_mask = key_padding_mask(mask)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, attn_mask, train=train, rngs=rngs)
            hidden.append(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return TextEncoderOutput(x, pooled, tuple(hidden) if return_hidden_states else None)

    def sentence_embedding(self, tokens: jax.Array, mask: jax.Array | None = None, *, normalize: bool = True):
        """sentence-transformers' embedding: mean of the last hidden state over the real tokens, L2 normalised."""
        mask = self.default_mask(tokens, mask)
        return mean_pool(self(tokens, mask).last_hidden_state, mask, normalize=normalize)
