"""Registered SAMWISE variants: SAM 2.0 Hiera trunks with RoBERTa-base (official `--sam2_version tiny|base|large`).

| zoo name                 | SAM2 trunk | text encoder | adapters (stages 2-4) | trainable params |
|--------------------------|------------|--------------|-----------------------|------------------|
| samwise_sam2_tiny        | Hiera-T    | RoBERTa-base | 192 / 384 / 768 ch    | 5,120,770        |
| samwise_sam2_base_plus   | Hiera-B+   | RoBERTa-base | 224 / 448 / 896 ch    | 5,235,906        |
| samwise_sam2_large       | Hiera-L    | RoBERTa-base | 288 / 576 / 1152 ch   | 5,466,178        |

The released checkpoints (`pretrained_model.pth`, RefCOCO pretraining; `final_model_mevis.pth`; the Ref-YouTube-VOS
model) are Google Drive files linked from the official README (B+ only): download by hand. They hold
`{'model': state_dict, 'optimizer', 'lr_scheduler', 'epoch', 'args'}`; the zoo's safe reader refuses the pickled
`args`, so re-save the weights once: `torch.save({'model': torch.load(f, weights_only=False)['model']}, g)` and pass
`g` as `pretrained=`. Overrides: any `SAMWISEConfig` field (image_size, switch_mem, cme_decision_window, ...) and
dtype / param_dtype / attention_impl.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from models.samwise.convert import convert_samwise
from models.samwise.model import SAMWISE, SAMWISEConfig
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_model

_REPO = "https://github.com/ClaudiaCuttano/SAMWISE"
_PAPER = "SAMWISE: Infusing Wisdom in SAM2 for Text-Driven Video Segmentation (CVPR 2025, arXiv:2411.17646)"
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(SAMWISEConfig)}


def build_samwise(sam2_variant: str, *, rngs: nnx.Rngs, **overrides: Any) -> SAMWISE:
    """A SAMWISE model on the SAM 2.0 `sam2_variant` trunk; `overrides` are `SAMWISEConfig` fields and the module's
    dtype / param_dtype / attention_impl."""
    module_kwargs = {k: overrides.pop(k) for k in ("dtype", "param_dtype", "attention_impl") if k in overrides}
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown SAMWISE overrides {unknown}; expected SAMWISEConfig fields {sorted(_CONFIG_FIELDS)} "
                         "or dtype / param_dtype / attention_impl")
    return SAMWISE(SAMWISEConfig(sam2_variant=sam2_variant, **overrides), rngs=rngs, **module_kwargs)


def _register(name: str, variant: str, manual: bool) -> None:
    cfg = PretrainedCfg(
        input_size=(1024, 1024, 3), interpolation="bilinear", crop_pct=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=0, url=_REPO, license="MIT (SAMWISE); Apache-2.0 (SAM2)", paper=_PAPER,
        manual_url=f"{_REPO}#model-zoo" if manual else "",
        manual_filename="final_model_mevis.pth" if manual else "",
        notes=(("" if manual else "No official weights were released for this trunk (the official README links "
                "Hiera-B+ checkpoints only); train it or load your own. ")
               + "Inputs: frames resized to long side 1024, ImageNet-normalised, zero-padded bottom/right; text: "
               "roberta-base BPE ids (models.text.roberta_tokenizer). Released checkpoints are re-saved as "
               "{'model': state_dict} before loading (see models/samwise/variants.py)"),
    )

    def builder(*, rngs: nnx.Rngs, **overrides: Any) -> SAMWISE:
        return build_samwise(variant, rngs=rngs, **overrides)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"SAMWISE on SAM 2.0 Hiera-{variant} with RoBERTa-base; overrides: SAMWISEConfig fields."
    register_model(name, cfg=cfg, converter=convert_samwise)(builder)


_register("samwise_sam2_tiny", "t", manual=False)
_register("samwise_sam2_base_plus", "b+", manual=True)
_register("samwise_sam2_large", "l", manual=False)
