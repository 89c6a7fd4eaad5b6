"""Registered ILA variants: Kinetics-400 (X-CLIP text head, depthwise-separable interactive block, branch master)
and Something-Something v2 (linear head over 174 classes, full-conv interactive block, branch SSV2).

| zoo name                   | backbone       | frames x res | head  | official top-1 (README) |
|----------------------------|----------------|--------------|-------|-------------------------|
| ila_vit_b32_k400_8f        | CLIP ViT-B/32  | 8 x 224      | xclip | 81.3                    |
| ila_vit_b32_k400_16f       | CLIP ViT-B/32  | 16 x 224     | xclip | 82.4                    |
| ila_vit_b16_k400_8f        | CLIP ViT-B/16  | 8 x 224      | xclip | 84.0                    |
| ila_vit_b16_k400_16f       | CLIP ViT-B/16  | 16 x 224     | xclip | 85.7                    |
| ila_vit_l14_k400_8f        | CLIP ViT-L/14  | 8 x 224      | xclip | 88.0                    |
| ila_vit_l14_336_k400_16f   | CLIP ViT-L/14  | 16 x 336     | xclip | 88.7                    |
| ila_vit_b16_ssv2_8f        | CLIP ViT-B/16  | 8 x 224      | linear| 65.0                    |
| ila_vit_b16_ssv2_16f       | CLIP ViT-B/16  | 16 x 224     | linear| 66.8                    |
| ila_vit_l14_ssv2_8f        | CLIP ViT-L/14  | 8 x 224      | linear| 67.8                    |
| ila_vit_l14_336_ssv2_16f   | CLIP ViT-L/14  | 16 x 336     | linear| 70.2                    |

The official weights are Google Drive files linked from the README (`pretrained_cfg(name).manual_url`; the files are
called e.g. `k400_B_16_16_rel.pth`): download by hand, save as `<name>.pth`, and
load with `create_from_official(name, path)` (the files pickle a yacs config, which `create_model(name,
pretrained=file)` refuses; a re-saved `{'model': state_dict}` loads either way). Training starts from OpenAI CLIP: `models.ila.convert.load_clip_weights(model, clip_state_dict)`.
Inputs are ImageNet-normalised (the official pipeline uses ImageNet's mean/std on 0-255, not CLIP's).
"""

from __future__ import annotations

import os
from typing import Any

from flax import nnx

from models.ila.convert import convert_ila, read_official_checkpoint
from models.ila.model import ILAVideoClassifier
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, get_model_entry, register_model

_REPO = "https://github.com/Francis-Rings/ILA"
_PAPER = "https://arxiv.org/abs/2304.10465"
SSV2_CLASSES = 174
K400_CLASSES = 400

_B = {"vision_width": 768, "vision_layers": 12, "embed_dim": 512, "text_width": 512, "text_layers": 12}
_L = {"vision_width": 1024, "vision_layers": 24, "embed_dim": 768, "text_width": 768, "text_layers": 12}
_K400 = {"head": "xclip", "interactive_form": "separable"}
_SSV2 = {"head": "linear", "interactive_form": "full", "num_classes": SSV2_CLASSES}


def _cfg(name: str, size: int, frames: int, dataset: str, top1: float, drive_id: str) -> PretrainedCfg:
    classes = K400_CLASSES if dataset == "k400" else SSV2_CLASSES
    return PretrainedCfg(
        input_size=(size, size, 3), interpolation="bicubic", crop_pct=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=classes, url=_REPO, license="see the official repository", paper=_PAPER,
        notes=(f"{frames} frames; official top-1 {top1} ({dataset}, 4 clips x 3 crops). Weights: Google Drive links "
               f"in the official README; download by hand and read with models.ila.read_official_checkpoint."),
        manual_url=f"https://drive.google.com/file/d/{drive_id}/view", manual_filename=f"{name}.pth",
    )


def _build(rngs: nnx.Rngs, defaults: dict[str, Any], overrides: dict[str, Any]) -> ILAVideoClassifier:
    return ILAVideoClassifier(rngs=rngs, **dict(defaults, **overrides))


def _variant(name: str, backbone: dict, size: int, patch: int, frames: int, dataset: str, top1: float,
             drive_id: str) -> None:
    head = _K400 if dataset == "k400" else _SSV2
    defaults = dict(backbone, **head, img_size=size, patch_size=patch, num_frames=frames)

    def builder(*, rngs: nnx.Rngs, **overrides: Any) -> ILAVideoClassifier:
        return _build(rngs, defaults, overrides)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"ILA on CLIP ViT-{'B' if backbone is _B else 'L'}/{patch} at {size} px, {frames} frames, "
                       f"{dataset.upper()} ({'X-CLIP text' if dataset == 'k400' else 'linear'} head).")
    builder.__module__ = __name__
    globals()[name] = register_model(cfg=_cfg(name, size, frames, dataset, top1, drive_id),
                                     converter=convert_ila)(builder)


_variant("ila_vit_b32_k400_8f", _B, 224, 32, 8, "k400", 81.3, "1hbl3nndAcxENsif0QuEJ_8UxiTv9jSOh")
_variant("ila_vit_b32_k400_16f", _B, 224, 32, 16, "k400", 82.4, "1GEO8m1qfDsOj-81YW5jc8ekAxPWMrtg3")
_variant("ila_vit_b16_k400_8f", _B, 224, 16, 8, "k400", 84.0, "1lAUgzxBDHoueXDaG9X9WFlBPVBl5LNdk")
_variant("ila_vit_b16_k400_16f", _B, 224, 16, 16, "k400", 85.7, "1IYz8DzzgoNbU1aXyeHFl69t6pb0RNMsV")
_variant("ila_vit_l14_k400_8f", _L, 224, 14, 8, "k400", 88.0, "1IhalyRKqAbJ9efLAgAA4f7t9hwRMux0p")
_variant("ila_vit_l14_336_k400_16f", _L, 336, 14, 16, "k400", 88.7, "132aB_FF-jPKP1z3kZArG_tOj32rVIFYc")
_variant("ila_vit_b16_ssv2_8f", _B, 224, 16, 8, "ssv2", 65.0, "1Ei0fO-W8u4jBQO0qG6V7nlRjKUuozbLa")
_variant("ila_vit_b16_ssv2_16f", _B, 224, 16, 16, "ssv2", 66.8, "1NYXsYSOjRuuOIXiCTaTE2gFUCi-1qC_5")
_variant("ila_vit_l14_ssv2_8f", _L, 224, 14, 8, "ssv2", 67.8, "10xHxzyUH38bjkAAutlBvMkj0BxXaaobB")
_variant("ila_vit_l14_336_ssv2_16f", _L, 336, 14, 16, "ssv2", 70.2, "1ZquukTAxosC2k1uquI9jnMsk4BA2N5w5")


def create_from_official(name: str, path: str | os.PathLike, **overrides: Any) -> ILAVideoClassifier:
    """Build variant `name` with the weights of an official ILA `.pth` (read with `read_official_checkpoint`, which
    allows the pickled yacs config that `create_model(..., pretrained=file)` refuses)."""
    builder = get_model_entry(name).builder
    abstract = nnx.eval_shape(lambda: builder(rngs=nnx.Rngs(0), **overrides))
    return convert_ila(read_official_checkpoint(path), abstract)
