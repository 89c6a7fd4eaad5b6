"""timm ViT checkpoints -> NNX, and torch-exact bicubic resampling of position embeddings.

timm's `resample_abs_pos_embed` runs `F.interpolate(mode="bicubic", align_corners=False, antialias=True)`; open_clip
and Hugging Face CLIP use `antialias=False`. Both kernels differ from `jax.image.resize("cubic")`; the torch-exact
matrices live in `models.layers.resize` (`bicubic_matrix`, `resize_bicubic_torch`, re-exported here) and are applied
once, at conversion time.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from flax import nnx

from models.layers.resize import bicubic_matrix, resize_bicubic_torch  # noqa: F401  (bicubic_matrix re-exported)
from zoo.convert import Rule, conv2d, convert_with_rules, extract_state_dict, flat_paths, identity, linear


def resample_abs_pos_embed(
    pos_embed: np.ndarray,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    *,
    num_prefix_tokens: int = 1,
    antialias: bool = True,
) -> np.ndarray:
    """Resample a [1, prefix + h * w, dim] (or [prefix + h * w, dim]) position embedding to the grid `new_size`.

    Equals timm's `resample_abs_pos_embed` (default antialias=True); pass antialias=False for open_clip / HF CLIP.
    Prefix (class) tokens are kept as they are; the result has the input's rank and dtype.
    """
    squeeze = pos_embed.ndim == 2
    posemb = pos_embed[None] if squeeze else pos_embed
    num_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(num_grid)
        if side * side != num_grid:
            raise ValueError(f"cannot infer a square grid from {num_grid} position tokens; pass old_size")
        old_size = (side, side)
    if tuple(old_size) == tuple(new_size):
        return pos_embed
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    grid = grid[0].astype(np.float32).reshape(old_size[0], old_size[1], -1)
    grid = resize_bicubic_torch(grid, tuple(new_size), antialias=antialias).astype(np.float32)
    out = np.concatenate([prefix, grid.reshape(1, -1, grid.shape[-1]).astype(posemb.dtype)], axis=1)
    return out[0] if squeeze else out


VIT_RULES = (
    Rule(r"patch_embed\.proj\.weight", "patch_embed.proj.kernel", conv2d),
    Rule(r"patch_embed\.proj\.bias", "patch_embed.proj.bias"),
    Rule(r"cls_token", "cls_token"),
    Rule(r"pos_embed", "pos_embed"),
    Rule(r"blocks\.(\d+)\.(norm1|norm2)\.weight", r"blocks.\1.\2.scale"),
    Rule(r"blocks\.(\d+)\.(norm1|norm2)\.bias", r"blocks.\1.\2.bias"),
    Rule(r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight", r"blocks.\1.\2.kernel", linear),
    Rule(r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.bias", r"blocks.\1.\2.bias"),
    Rule(r"blocks\.(\d+)\.(ls1|ls2)\.gamma", r"blocks.\1.\2.gamma", identity),
    Rule(r"(norm|fc_norm)\.weight", r"\1.scale"),
    Rule(r"(norm|fc_norm)\.bias", r"\1.bias"),
    Rule(r"head\.weight", "head.kernel", linear),
    Rule(r"head\.bias", "head.bias"),
)


def convert_vit(checkpoint, abstract_model: nnx.Module) -> nnx.Module:
    """timm `VisionTransformer` state dict (nested numpy dicts from `zoo.convert.read_checkpoint`) -> our model.

    - `pos_embed` is resampled (timm's antialiased bicubic) when the model's grid differs from the checkpoint's.
    - A head of another size (fine-tuning with `num_classes` overridden) is dropped with a warning and the new head
      starts at zero; with `num_classes=0` the checkpoint's head is ignored.
    Every other mismatch (missing, unmapped, mis-shaped keys) raises one `ConversionError` listing them all.
    """
    state_dict = dict(extract_state_dict(checkpoint, prefix="module."))
    expected = flat_paths(nnx.state(abstract_model, nnx.Param))
    if "pos_embed" in state_dict and "pos_embed" in expected:
        have, want = state_dict["pos_embed"], tuple(expected["pos_embed"].shape)
        if have.ndim == 3 and have.shape != want and have.shape[-1] == want[-1]:
            prefix = abstract_model.num_prefix_tokens
            old = have.shape[1] - prefix
            if math.isqrt(old) ** 2 == old:  # a square grid; anything else is left to the mis-shape report
                state_dict["pos_embed"] = resample_abs_pos_embed(
                    have, abstract_model.grid_size, num_prefix_tokens=prefix, antialias=True
                )
    allow_missing = []
    head_kernel = expected.get("head.kernel")
    if "head.weight" in state_dict:
        num_classes = state_dict["head.weight"].shape[0]
        if head_kernel is not None and num_classes != head_kernel.shape[1]:
            warnings.warn(
                f"checkpoint head has {num_classes} classes, the model {head_kernel.shape[1]}: the head is not "
                "loaded (zero init)",
                stacklevel=2,
            )
            allow_missing.append(r"head\..*")
        if head_kernel is None or allow_missing:
            state_dict.pop("head.weight")
            state_dict.pop("head.bias", None)
    return convert_with_rules(state_dict, abstract_model, VIT_RULES, allow_missing=allow_missing)
