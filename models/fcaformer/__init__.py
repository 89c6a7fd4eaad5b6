"""FcaFormer: forward cross attention in a hybrid ConvNeXt / ViT classifier (arXiv 2211.07198).

Variants `fcaformer_l1` .. `fcaformer_l4` as defined by the official code; only L2 has released weights.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from models.fcaformer.convert import convert_fcaformer
from models.fcaformer.model import FcaBlock, FcaFormer
from zoo.registry import PretrainedCfg, register_model

__all__ = ["VARIANTS", "FcaBlock", "FcaFormer", "convert_fcaformer"]

# embed_dims, depths, num_heads (stages 2 and 3); official `fcaformer_l{1..4}`.
VARIANTS: dict[str, dict[str, Any]] = {
    "fcaformer_l1": {"embed_dims": (64, 128, 192, 320), "depths": (2, 2, 6, 2), "num_heads": (0, 0, 6, 10)},
    "fcaformer_l2": {"embed_dims": (96, 192, 320, 480), "depths": (2, 2, 7, 2), "num_heads": (0, 0, 10, 15)},
    "fcaformer_l3": {"embed_dims": (96, 192, 320, 512), "depths": (3, 6, 12, 3), "num_heads": (0, 0, 10, 16)},
    "fcaformer_l4": {"embed_dims": (128, 256, 512, 768), "depths": (3, 6, 12, 3), "num_heads": (0, 0, 16, 24)},
}

_PAPER = "Fcaformer: Forward Cross Attention in Hybrid Vision Transformer (arXiv 2211.07198)"
_NO_WEIGHTS = "No official weights were released for this variant (only L2)."
_L2_URL = "https://pan.baidu.com/s/1X8Ou539s48s3l4bX8lV2Zg"


def _cfg(url: str = "", notes: str = "", filename: str = "") -> PretrainedCfg:
    # The only released weights are on Baidu pan, which needs a browser: pretrained=True says where to put the file.
    return PretrainedCfg(
        input_size=(224, 224, 3), interpolation="bicubic", crop_pct=0.875, num_classes=1000, url=url,
        license="see https://github.com/hkzhang-git/FcaFormer", paper=_PAPER, notes=notes, manual_url=url,
        manual_filename=filename,
    )


def _build(name: str, rngs: nnx.Rngs, overrides: dict[str, Any]) -> FcaFormer:
    return FcaFormer(**{**VARIANTS[name], **overrides}, rngs=rngs)


@register_model(cfg=_cfg(notes=_NO_WEIGHTS), converter=convert_fcaformer)
def fcaformer_l1(*, rngs: nnx.Rngs, **overrides: Any) -> FcaFormer:
    """FcaFormer-L1: 6.19M params, 1.4 GMACs, 80.3% ImageNet-1k top-1 (official)."""
    return _build("fcaformer_l1", rngs, overrides)


@register_model(
    cfg=_cfg(_L2_URL, "Baidu pan, access code 1234; an official training checkpoint ({'model', 'model_ema'}).",
             "fcaformer_l2.pth"),
    converter=convert_fcaformer,
)
def fcaformer_l2(*, rngs: nnx.Rngs, **overrides: Any) -> FcaFormer:
    """FcaFormer-L2: 16.28M params, 3.6 GMACs, 83.1% ImageNet-1k top-1 (official weights: Baidu pan)."""
    return _build("fcaformer_l2", rngs, overrides)


@register_model(cfg=_cfg(notes=_NO_WEIGHTS), converter=convert_fcaformer)
def fcaformer_l3(*, rngs: nnx.Rngs, **overrides: Any) -> FcaFormer:
    """FcaFormer-L3: 27.89M params, 6.7 GMACs, 84.2% ImageNet-1k top-1 (official)."""
    return _build("fcaformer_l3", rngs, overrides)


@register_model(cfg=_cfg(notes=_NO_WEIGHTS), converter=convert_fcaformer)
def fcaformer_l4(*, rngs: nnx.Rngs, **overrides: Any) -> FcaFormer:
    """FcaFormer-L4: 65.64M params, 14.5 GMACs, 84.9% ImageNet-1k top-1 (official)."""
    return _build("fcaformer_l4", rngs, overrides)
