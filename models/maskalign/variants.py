"""Registered MaskAlign variants: the three pre-training pairs of the ModelCard, a timm-ViT-teacher option, and the
fine-tuning ViTs that load a pre-training checkpoint's student.

| zoo name                                 | student  | teacher           | fusion | official FT top-1 |
|------------------------------------------|----------|-------------------|--------|-------------------|
| maskalign_vit_base_patch16_clip_b16      | ViT-B/16 | CLIP-B/16         | linear | 85.4              |
| maskalign_vit_large_patch16_clip_b16     | ViT-L/16 | CLIP-B/16         | sum    | 86.5              |
| maskalign_vit_large_patch16_clip_l14     | ViT-L/16 | CLIP-L/14 @ 196   | linear | 87.4              |
| maskalign_vit_base_patch16_vit_teacher   | ViT-B/16 | a registered ViT  | linear | -                 |
| maskalign_vit_{base,large}_patch16_ft    | ViT, avg pool + fc_norm, from the student  | (fine-tuning)       |

Every pre-training variant uses the README recipe options (attention masking at 0.7, whitened targets, smooth-L1 on
the top 5 teacher layers, linear heads); each is an override (`mask_ratio=0.75`, `loss_weights="mean"`, ...).
`teacher_overrides={...}` changes the teacher's config (tiny teachers in tests); the ViT-teacher variant takes
`teacher_name` (any registered `vit_*`), `teacher_mean` / `teacher_std`. Official weights are on Google Drive
(ModelCard): download them by hand and load with `create_from_official(name, path)` (the files pickle `args`).
"""

from __future__ import annotations

import os
from typing import Any

from flax import nnx

from models.maskalign.convert import convert_maskalign, convert_maskalign_to_vit, read_official_checkpoint
from models.maskalign.model import MaskAlign
from models.maskalign.teacher import IMAGENET_MEAN, IMAGENET_STD, VitTeacher, build_clip_teacher
from models.vit.model import VisionTransformer
from zoo.registry import PretrainedCfg, get_model_entry, register_model

_REPO = "https://github.com/OpenDriveLab/maskalign"
_PAPER = "https://arxiv.org/abs/2211.08887"
_GDRIVE = {
    "b16_clip_b16": "https://drive.google.com/file/d/1hu_dlzOxVqS1Zx6W41aOu7qL2XqXOuqx/view",
    "l16_clip_b16": "https://drive.google.com/file/d/1hWdjhKso52K5M9xem0j81KJVhlg0oZov/view",
    "l16_clip_l14": "https://drive.google.com/file/d/1NdwxvQkaHk8axmThxDrQKTLJ8CF_QgM5/view",
}

# The README's pre-training options.
RECIPE = {"mask_ratio": 0.7, "mask_type": "attention", "fusion_type": "linear", "target_norm": "whiten",
          "loss_type": "smoothl1", "loss_weights": "top5", "head_type": "linear"}
_B16 = {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}
_L16 = {"patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}
CLIP_B16 = {"img_size": 224, "patch_size": 16, "width": 768, "layers": 12, "heads": 12}
CLIP_L14_196 = {"img_size": 196, "patch_size": 14, "width": 1024, "layers": 24, "heads": 16}
_TEACHER_COMMON = ("attention_impl", "dtype", "param_dtype")


def _cfg(key: str | None, notes: str = "", num_classes: int = 0) -> PretrainedCfg:
    extra = {"manual_url": _GDRIVE[key], "manual_filename": f"maskalign_{key}.pth"} if key else {}
    return PretrainedCfg(
        input_size=(224, 224, 3), interpolation="bicubic", crop_pct=0.875, num_classes=num_classes,
        url=f"{_REPO}/blob/main/ModelCard.md", license="apache-2.0", paper=_PAPER,
        notes=notes, **extra,
    )


def _teacher_common(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in _TEACHER_COMMON if k in kwargs}


def _build_clip(rngs: nnx.Rngs, student: dict[str, Any], teacher: dict[str, Any], overrides: dict[str, Any]):
    kwargs = dict(RECIPE, **student)
    kwargs.update(overrides)
    teacher_cfg = {**teacher, **_teacher_common(kwargs), **kwargs.pop("teacher_overrides", {})}
    return MaskAlign(teacher=build_clip_teacher(rngs=rngs, **teacher_cfg), rngs=rngs, **kwargs)


@register_model(cfg=_cfg("b16_clip_b16", "ViT-B/16 student, CLIP-B/16 teacher; FT 85.4 top-1"),
                converter=convert_maskalign)
def maskalign_vit_base_patch16_clip_b16(*, rngs: nnx.Rngs, **overrides: Any) -> MaskAlign:
    """MaskAlign ViT-B/16 student + CLIP-B/16 teacher (92.73M trainable of 178.69M)."""
    return _build_clip(rngs, dict(_B16, drop_path_rate=0.1), CLIP_B16, overrides)


@register_model(cfg=_cfg("l16_clip_b16", "ViT-L/16 student, CLIP-B/16 teacher (sum fusion); FT 86.5 top-1"),
                converter=convert_maskalign)
def maskalign_vit_large_patch16_clip_b16(*, rngs: nnx.Rngs, **overrides: Any) -> MaskAlign:
    """MaskAlign ViT-L/16 student + CLIP-B/16 teacher: 24 student blocks onto 12 teacher layers (fusion "sum")."""
    return _build_clip(rngs, dict(_L16, drop_path_rate=0.2, fusion_type="sum"), CLIP_B16, overrides)


@register_model(cfg=_cfg("l16_clip_l14", "ViT-L/16 student, CLIP-L/14 teacher at 196 px; FT 87.4 top-1"),
                converter=convert_maskalign)
def maskalign_vit_large_patch16_clip_l14(*, rngs: nnx.Rngs, **overrides: Any) -> MaskAlign:
    """MaskAlign ViT-L/16 student + CLIP-L/14 teacher fed 196 px (a 14x14 grid like the student's)."""
    return _build_clip(rngs, dict(_L16, drop_path_rate=0.2), CLIP_L14_196, overrides)


@register_model(cfg=_cfg(None, "ViT-B/16 student with any registered timm ViT as teacher (no official weights)"),
                converter=convert_maskalign)
def maskalign_vit_base_patch16_vit_teacher(*, rngs: nnx.Rngs, teacher_name: str = "vit_base_patch16_224",
                                           teacher_overrides: dict[str, Any] | None = None,
                                           teacher_mean: tuple[float, ...] = IMAGENET_MEAN,
                                           teacher_std: tuple[float, ...] = IMAGENET_STD,
                                           **overrides: Any) -> MaskAlign:
    """MaskAlign with a timm-layout ViT teacher (`teacher_name`, e.g. "vit_base_patch16_224" = the DINO ViT-B/16
    architecture, or "vit_tiny_patch16_224" for an offline run; `teacher_overrides` go to its builder, its
    head is removed). `teacher_mean` / `teacher_std`: the normalisation the teacher was trained with (DINO: ImageNet,
    the zoo's augreg ViTs: 0.5 / 0.5)."""
    kwargs = dict(RECIPE, **_B16)
    kwargs.update(overrides)
    builder = get_model_entry(teacher_name).builder
    vit = builder(rngs=rngs, **{"num_classes": 0, **_teacher_common(kwargs), **(teacher_overrides or {})})
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"teacher_name={teacher_name!r} is not a timm-layout ViT (models.vit); use a vit_* name")
    return MaskAlign(teacher=VitTeacher(vit, mean=teacher_mean, std=teacher_std), rngs=rngs, **kwargs)


def _build_ft(rngs: nnx.Rngs, defaults: dict[str, Any], overrides: dict[str, Any]) -> VisionTransformer:
    return VisionTransformer(rngs=rngs, **{**defaults, "global_pool": "avg", "num_classes": 1000, **overrides})


@register_model(cfg=_cfg(None, "fine-tuning ViT-B/16 (avg pool + fc_norm) loading a MaskAlign student; no official weights "
                         "of the fine-tuned model were released",
                         num_classes=1000),
                converter=convert_maskalign_to_vit)
def maskalign_vit_base_patch16_ft(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """The official fine-tuning ViT-B/16 (`models_vit.vit_base_patch16(global_pool=True)`); `pretrained=` a
    MaskAlign pre-training checkpoint loads its student (official recipe: drop_path_rate=0.2, layer decay 0.55)."""
    return _build_ft(rngs, _B16, overrides)


@register_model(cfg=_cfg(None, "fine-tuning ViT-L/16 (avg pool + fc_norm) loading a MaskAlign student; no official weights "
                         "of the fine-tuned model were released",
                         num_classes=1000),
                converter=convert_maskalign_to_vit)
def maskalign_vit_large_patch16_ft(*, rngs: nnx.Rngs, **overrides: Any) -> VisionTransformer:
    """The official fine-tuning ViT-L/16 (official recipe: drop_path_rate=0.4, layer decay 0.75)."""
    return _build_ft(rngs, _L16, overrides)


def create_from_official(name: str, path: str | os.PathLike, *, rngs: nnx.Rngs | None = None,
                         **overrides: Any) -> nnx.Module:
    """`zoo.create_model(name, pretrained=path)` for an official MaskAlign `.pth`, which pickles `args` (an
    argparse.Namespace that the registry's safe reader refuses): read with `read_official_checkpoint`, converted with
    the variant's converter."""
    entry = get_model_entry(name)
    checkpoint = read_official_checkpoint(path)
    abstract = nnx.eval_shape(lambda r: entry.builder(rngs=r, **overrides), rngs or nnx.Rngs(0))
    return entry.converter(checkpoint, abstract)
