"""SAMWISE's Conditional Memory Encoder head (official `models/conditional_memory_encoder.py`).

The decision of whether the memory should follow the text-prompted object: a learned decision token, the object
pointer computed without memory (`obj_ptr_zero`) and the one computed with the memory bank (`obj_ptr_two`) form a
3-token sequence; one post-LayerNorm self-attention block (the official `SelfAttentionBlock`: MHA with 8 heads,
residual + norm1, a ReLU feed-forward of width 128, residual + norm3; dropout 0.1) mixes them, and a Linear on the
decision token gives 2 logits (the CME cross-entropy's classes). The policies that use the decision (`reweight`,
`all_mask`, `avg`) belong to the streaming model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Attention, Dropout, layer_norm, sharding_scope


class SelfAttentionBlock(nnx.Module):
    """The official post-LN `SelfAttentionBlock`: x = norm1(x + drop(MHA(x))); x = norm3(x + drop(fc2(drop(relu(
    fc1(x)))))). Its `norm2` is built but unused, as officially."""

    def __init__(self, dim: int, num_heads: int = 8, *, ffn_dim: int = 128, dropout: float = 0.1,
                 attention_impl: str = "auto", dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.self_attn = Attention(dim, num_heads, fused=True, qkv_bias=True, attention_impl=attention_impl,
                                   **common)
        self.linear1 = nnx.Linear(dim, ffn_dim, **common)
        self.linear2 = nnx.Linear(ffn_dim, dim, **common)
        self.norm1 = layer_norm(dim, eps=1e-5, **common)
        # Built and trained-but-unused officially (its forward never calls it); kept so that the parameters, their
        # count (5,235,906 trainable for B+) and the checkpoint keys are the official ones.
        self.norm2 = layer_norm(dim, eps=1e-5, **common)
        self.norm3 = layer_norm(dim, eps=1e-5, **common)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.dropout1 = Dropout(dropout, rngs=rngs)
        self.dropout3 = Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        x = self.norm1(x + self.dropout1(self.self_attn(x), train=train, rngs=rngs))
        hidden = self.dropout(jax.nn.relu(self.linear1(x)), train=train, rngs=rngs)
        return self.norm3(x + self.dropout3(self.linear2(hidden), train=train, rngs=rngs))


class ConditionalMemoryEncoder(nnx.Module):
    """`cme(obj_ptr_zero (B, C), obj_ptr_two (B, C)) -> (B, 2)` decision logits (see the module docstring)."""

    def __init__(self, dim: int = 256, num_heads: int = 8, *, dropout: float = 0.1, attention_impl: str = "auto",
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        with sharding_scope():
            self.transformerBlock = SelfAttentionBlock(dim, num_heads, dropout=dropout, attention_impl=attention_impl,
                                                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            self.decision_token = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (1, dim), param_dtype))
            self.decision_class_head = nnx.Linear(dim, 2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, obj_ptr_zero: jax.Array, obj_ptr_two: jax.Array, *, train: bool = False,
                 rngs=None) -> jax.Array:
        if obj_ptr_zero.shape != obj_ptr_two.shape or obj_ptr_zero.ndim != 2:
            raise ValueError(f"the CME takes two (B, C) object pointers of one shape; got {obj_ptr_zero.shape} and "
                             f"{obj_ptr_two.shape}")
        batch = obj_ptr_zero.shape[0]
        token = jnp.broadcast_to(self.decision_token[...].astype(obj_ptr_zero.dtype), (batch, self.decision_token.shape[-1]))
        sequence = jnp.stack([token, obj_ptr_zero, obj_ptr_two], axis=1)  # (B, 3, C)
        out = self.transformerBlock(sequence, train=train, rngs=rngs)
        return self.decision_class_head(out[:, 0])


def project_text(text_dim: int = 768, embed_dim: int = 256, *, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
    """SAMWISE's `sam_prompt_encoder.project_text`: a 3-layer ReLU MLP (text width -> SAM width -> SAM width -> SAM
    width; `layers.0..2` as officially) that turns the text state (the RoBERTa class token after the early fusion)
    into one sparse prompt token for SAM2's mask decoder. Trained (the official commit 11af2c7)."""
    from models.sam2.layers import MLP

    return MLP(text_dim, embed_dim, embed_dim, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

