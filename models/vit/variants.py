"""Registered ViT variants, named and configured as in timm, with timm's default pretrained cfgs.

Weights: the augreg ImageNet-21k -> 1k fine-tunes on the Hugging Face hub (`timm/<name>.<tag>`, `model.safetensors`):
`create_model(name, pretrained=True)` fetches and converts them once (zoo.download); a local file works as well.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from models.vit.convert import convert_vit
from models.vit.model import VisionTransformer
from zoo.registry import PretrainedCfg, register_model

_AUGREG_MEAN_STD = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _cfg(hf_hub_id: str, **kwargs: Any) -> PretrainedCfg:
    return PretrainedCfg(
        input_size=(224, 224, 3),
        interpolation="bicubic",
        crop_pct=0.9,
        num_classes=1000,
        url=f"https://huggingface.co/{hf_hub_id}",
        hf_hub_id=hf_hub_id,
        hf_hub_filename="model.safetensors",
        license="apache-2.0",
        paper="https://arxiv.org/abs/2010.11929 ; augreg weights: https://arxiv.org/abs/2106.10270",
        **_AUGREG_MEAN_STD,
        **kwargs,
    )


def _build(rngs: nnx.Rngs, defaults: dict[str, Any], overrides: dict[str, Any]) -> VisionTransformer:
    return VisionTransformer(rngs=rngs, **dict(defaults, **overrides))


@register_model(cfg=_cfg("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"), converter=convert_vit)
def vit_tiny_patch16_224(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """ViT-Ti/16 at 224 (5.7M params)."""
    return _build(rngs, {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3}, overrides)


@register_model(cfg=_cfg("timm/vit_small_patch16_224.augreg_in21k_ft_in1k"), converter=convert_vit)
def vit_small_patch16_224(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """ViT-S/16 at 224 (22.1M params)."""
    return _build(rngs, {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6}, overrides)


@register_model(cfg=_cfg("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"), converter=convert_vit)
def vit_base_patch16_224(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """ViT-B/16 at 224 (86.6M params)."""
    return _build(rngs, {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}, overrides)


@register_model(cfg=_cfg("timm/vit_base_patch32_224.augreg_in21k_ft_in1k"), converter=convert_vit)
def vit_base_patch32_224(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """ViT-B/32 at 224 (88.2M params)."""
    return _build(rngs, {"patch_size": 32, "embed_dim": 768, "depth": 12, "num_heads": 12}, overrides)


@register_model(cfg=_cfg("timm/vit_large_patch16_224.augreg_in21k_ft_in1k"), converter=convert_vit)
def vit_large_patch16_224(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """ViT-L/16 at 224 (304.3M params)."""
    return _build(rngs, {"patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}, overrides)
