"""Registered CLIP variants (OpenAI architectures, QuickGELU).

| zoo name           | open_clip name          | image | patch | vision width/layers | text width/layers | embed |
|--------------------|-------------------------|-------|-------|---------------------|-------------------|-------|
| clip_vit_b32       | ViT-B-32 (quickgelu)    | 224   | 32    | 768 / 12            | 512 / 12          | 512   |
| clip_vit_b16       | ViT-B-16 (quickgelu)    | 224   | 16    | 768 / 12            | 512 / 12          | 512   |
| clip_vit_l14       | ViT-L-14 (quickgelu)    | 224   | 14    | 1024 / 24           | 768 / 12          | 768   |
| clip_vit_l14_336   | ViT-L-14-336 (quickgelu)| 336   | 14    | 1024 / 24           | 768 / 12          | 768   |

`url` is the OpenAI TorchScript file; the same weights as a plain open_clip state dict are on the Hugging Face hub
(`notes`), which is what `create_model(..., pretrained=<file>)` reads directly.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from models.clip.convert import convert_clip
from models.clip.model import CLIP
from zoo.registry import CLIP_MEAN, CLIP_STD, PretrainedCfg, register_model

_OPENAI = "https://openaipublic.azureedge.net/clip/models"


def _cfg(url: str, hf_hub_id: str, size: int = 224) -> PretrainedCfg:
    return PretrainedCfg(
        input_size=(size, size, 3),
        interpolation="bicubic",
        crop_pct=1.0,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        num_classes=0,
        url=url,
        license="mit",
        paper="https://arxiv.org/abs/2103.00020",
        notes=(
            "url is OpenAI's TorchScript archive (its path holds the file's sha256); pretrained=True fetches the same "
            f"weights as an open_clip state dict from https://huggingface.co/{hf_hub_id}"
        ),
        hf_hub_id=hf_hub_id,
        hf_hub_filename="open_clip_model.safetensors",
    )


def _build(rngs: nnx.Rngs, defaults: dict[str, Any], overrides: dict[str, Any]) -> CLIP:
    return CLIP(rngs=rngs, **dict(defaults, **overrides))


_B = {"embed_dim": 512, "vision_width": 768, "vision_layers": 12, "text_width": 512, "text_layers": 12}
_L = {"embed_dim": 768, "vision_width": 1024, "vision_layers": 24, "text_width": 768, "text_layers": 12}


@register_model(
    cfg=_cfg(f"{_OPENAI}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
             "timm/vit_base_patch32_clip_224.openai"),
    converter=convert_clip,
)
def clip_vit_b32(*, rngs: nnx.Rngs, **overrides: Any) -> CLIP:
    """OpenAI CLIP ViT-B/32 (151.3M params)."""
    return _build(rngs, dict(_B, img_size=224, patch_size=32), overrides)


@register_model(
    cfg=_cfg(f"{_OPENAI}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
             "timm/vit_base_patch16_clip_224.openai"),
    converter=convert_clip,
)
def clip_vit_b16(*, rngs: nnx.Rngs, **overrides: Any) -> CLIP:
    """OpenAI CLIP ViT-B/16 (149.6M params)."""
    return _build(rngs, dict(_B, img_size=224, patch_size=16), overrides)


@register_model(
    cfg=_cfg(f"{_OPENAI}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
             "timm/vit_large_patch14_clip_224.openai"),
    converter=convert_clip,
)
def clip_vit_l14(*, rngs: nnx.Rngs, **overrides: Any) -> CLIP:
    """OpenAI CLIP ViT-L/14 (427.6M params)."""
    return _build(rngs, dict(_L, img_size=224, patch_size=14), overrides)


@register_model(
    cfg=_cfg(f"{_OPENAI}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
             "timm/vit_large_patch14_clip_336.openai", size=336),
    converter=convert_clip,
)
def clip_vit_l14_336(*, rngs: nnx.Rngs, **overrides: Any) -> CLIP:
    """OpenAI CLIP ViT-L/14 at 336 px (427.9M params)."""
    return _build(rngs, dict(_L, img_size=336, patch_size=14), overrides)
