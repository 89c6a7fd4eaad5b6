"""MaskAlign's frozen teachers: adapters that run a zoo backbone and return what the student is aligned to.

An adapter takes the student's ImageNet-normalised NHWC batch and returns a `TeacherOutput`:
- `hidden_states`: depth + 1 arrays [B, 1 + L, C], Hugging Face's convention (index 0 the embedding output, i the
  output of layer i, no final norm); MaskAlign's targets are indices 1..depth;
- `cls_attention`: [B, L], the last layer's attention probabilities from the class token to every patch, averaged
  over heads (the official `attentions[-1][:, :, 0, 1:].mean(1)`), which drives the attention masking.
Both are under `jax.lax.stop_gradient` (the official teacher runs under `torch.no_grad`).

- `ClipTeacher`: the zoo's CLIP image tower (`models.clip.VisionTower`, HF `CLIPVisionModel` semantics:
  hidden_states[0] = pre_layrnorm(embeddings)). The batch is de-normalised from ImageNet's mean/std and normalised
  with CLIP's; when the tower's input size differs from the batch's (CLIP-L/14 run at 196 for a 224 student), the
  batch is first resized with torch's bicubic (align_corners=False, no antialias), as the official `F.interpolate`.
- `VitTeacher`: the zoo's timm ViT (`models.vit.VisionTransformer`, HF `ViTModel` / DINO semantics: hidden_states[0]
  = patch + class token + position embedding). The batch is re-normalised to the teacher's mean/std (the official
  DINO teacher takes the ImageNet batch as it is, which is the default).
The attention probabilities are softmax(q k^T * scale) of the last block's own `attn.project` q and k: the block
itself runs through `kernels.attention`, which never materialises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.clip.model import VisionTower
from models.layers import Attention, bicubic_matrix, resize_hw, sharding_scope
from models.vit.model import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class TeacherOutput(NamedTuple):
    """What a teacher adapter returns (see the module docstring)."""

    hidden_states: tuple[jax.Array, ...]
    cls_attention: jax.Array


def renormalize(images: jax.Array, mean_from: Sequence[float], std_from: Sequence[float],
                mean_to: Sequence[float], std_to: Sequence[float]) -> jax.Array:
    """(std_from * x + mean_from - mean_to) / std_to per channel (NHWC), in the official order of operations
    (de-normalise, then normalise); the identity when both normalisations are the same."""
    if tuple(mean_from) == tuple(mean_to) and tuple(std_from) == tuple(std_to):
        return images
    dtype = images.dtype
    std_from, mean_from, mean_to, std_to = (jnp.asarray(v, dtype) for v in (std_from, mean_from, mean_to, std_to))
    return (std_from * images + mean_from - mean_to) / std_to


def cls_attention_probs(attn: Attention, x: jax.Array) -> jax.Array:
    """[B, heads, N]: the softmax row of the class token (query 0) of `attn` on its input `x` [B, N, dim].

    Only the class token's row is formed: softmax is per query row, so this is row 0 of the full probability matrix.
    """
    q, k, _ = attn.project(x)
    scale = attn.scale if attn.scale is not None else attn.head_dim**-0.5
    logits = jnp.einsum("bhd,bkhd->bhk", q[:, 0].astype(jnp.float32), k.astype(jnp.float32)) * scale
    return jax.nn.softmax(logits, axis=-1)


def _importance(probs_bhn: jax.Array) -> jax.Array:
    return probs_bhn[:, :, 1:].mean(axis=1)


class ClipTeacher(nnx.Module):
    """A `models.clip.VisionTower` as MaskAlign's teacher (see the module docstring).

    Args:
      tower: the image tower; `output_dim=0` (no projection) is what the HF `CLIPVisionModel` holds.
      input_mean, input_std: the normalisation of the batch it is given (the student's: ImageNet).
      mean, std: the normalisation the tower was trained with (CLIP's).
    """

    def __init__(self, tower: VisionTower, *, input_mean: Sequence[float] = IMAGENET_MEAN,
                 input_std: Sequence[float] = IMAGENET_STD, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD):
        self.tower = tower
        self.input_mean, self.input_std = tuple(input_mean), tuple(input_std)
        self.mean, self.std = tuple(mean), tuple(std)
        self.depth = tower.depth
        self.width = tower.width
        self.grid_size = tuple(tower.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.img_size = tuple(tower.img_size)

    def preprocess(self, images: jax.Array) -> jax.Array:
        """Resize to the tower's input size (torch bicubic, no antialias) when needed, then re-normalise."""
        if tuple(images.shape[1:3]) != self.img_size:
            images = resize_hw(images, self.img_size, lambda i, o: bicubic_matrix(i, o, antialias=False), axes=(1, 2))
        return renormalize(images, self.input_mean, self.input_std, self.mean, self.std)

    def __call__(self, images: jax.Array) -> TeacherOutput:
        x = self.preprocess(images)
        _, hidden = self.tower.forward_features(x, return_hidden_states=True)
        last = self.tower.transformer.resblocks[-1]
        probs = cls_attention_probs(last.attn, last.ln_1(hidden[-2]))
        return jax.lax.stop_gradient(TeacherOutput(tuple(hidden), _importance(probs)))


class VitTeacher(nnx.Module):
    """A `models.vit.VisionTransformer` (timm layout; DINO ViT-B/16 is `vit_base_patch16_224`) as the teacher.

    Args:
      vit: the backbone (its head, if any, is unused).
      input_mean, input_std: the normalisation of the batch it is given (the student's: ImageNet).
      mean, std: the normalisation the backbone was trained with (default ImageNet, as DINO; the zoo's augreg ViTs
        use 0.5 / 0.5).
    """

    def __init__(self, vit: VisionTransformer, *, input_mean: Sequence[float] = IMAGENET_MEAN,
                 input_std: Sequence[float] = IMAGENET_STD, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        if vit.num_prefix_tokens != 1:
            raise ValueError("a MaskAlign ViT teacher needs exactly one class token (class_token=True, no registers)")
        self.vit = vit
        self.input_mean, self.input_std = tuple(input_mean), tuple(input_std)
        self.mean, self.std = tuple(mean), tuple(std)
        self.depth = len(vit.blocks)
        self.width = vit.embed_dim
        self.grid_size = tuple(vit.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.img_size = tuple(vit.img_size)

    def __call__(self, images: jax.Array) -> TeacherOutput:
        x = renormalize(images, self.input_mean, self.input_std, self.mean, self.std)
        hidden = [self.vit.embed(x)]
        for block in self.vit.blocks:
            hidden.append(block(hidden[-1]))
        last = self.vit.blocks[-1]
        probs = cls_attention_probs(last.attn, last.norm1(hidden[-2]))
        return jax.lax.stop_gradient(TeacherOutput(tuple(hidden), _importance(probs)))


def build_clip_teacher(*, img_size: int = 224, patch_size: int = 16, width: int = 768, layers: int = 12,
                       heads: int | None = None, act: str = "quick_gelu", attention_impl: str = "auto",
                       dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs, **normalisation: Any):
    """A `ClipTeacher` around a fresh `VisionTower` without projection (the HF `CLIPVisionModel` parameters)."""
    with sharding_scope():  # as `CLIP` builds its towers: the big kernels carry "model"-axis metadata
        tower = VisionTower(
            img_size=img_size, patch_size=patch_size, width=width, layers=layers, heads=heads or width // 64,
            output_dim=0, act=act, attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
    return ClipTeacher(tower, **normalisation)
