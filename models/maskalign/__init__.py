"""MaskAlign: masked image modeling without reconstruction (importing this package registers the `maskalign_*`
variants)."""

from models.maskalign import variants  # noqa: F401  (registration)
from models.maskalign.convert import (
    convert_hf_clip_vision,
    convert_maskalign,
    convert_maskalign_to_vit,
    read_official_checkpoint,
)
from models.maskalign.masking import attention_keep_ids, keep_ids_from_noise, keep_mask, random_keep_ids
from models.maskalign.model import DistillHead, MaskAlign, MaskAlignOutput, loss_weight_list
from models.maskalign.student import MaskAlignStudent, get_2d_sincos_pos_embed
from models.maskalign.teacher import ClipTeacher, TeacherOutput, VitTeacher, build_clip_teacher
from models.maskalign.variants import create_from_official

__all__ = [
    "ClipTeacher",
    "DistillHead",
    "MaskAlign",
    "MaskAlignOutput",
    "MaskAlignStudent",
    "TeacherOutput",
    "VitTeacher",
    "attention_keep_ids",
    "build_clip_teacher",
    "convert_hf_clip_vision",
    "convert_maskalign",
    "convert_maskalign_to_vit",
    "create_from_official",
    "get_2d_sincos_pos_embed",
    "keep_ids_from_noise",
    "keep_mask",
    "loss_weight_list",
    "random_keep_ids",
    "read_official_checkpoint",
]
