"""ILA: Implicit Learnable Alignment for video recognition on CLIP (importing this package registers the `ila_*`
variants)."""

from models.ila import variants  # noqa: F401  (registration)
from models.ila.align import (
    ILA,
    ILAOutput,
    alignment_mask,
    cosine_loss,
    jitter_delta,
    jittered_alignment_mask,
    merge_pairs,
)
from models.ila.convert import convert_ila, ila_rules, load_clip_weights, read_official_checkpoint
from models.ila.groups import (
    FROZEN_PATTERNS,
    TRAINABLE_PATTERNS,
    frozen_patterns,
    group_param_counts,
    official_param_groups,
    param_group,
)
from models.ila.model import ILABlock, ILAVideoClassifier, ILAVideoOutput, ILAVisionTower
from models.ila.variants import create_from_official

__all__ = [
    "FROZEN_PATTERNS",
    "ILA",
    "TRAINABLE_PATTERNS",
    "ILABlock",
    "ILAOutput",
    "ILAVideoClassifier",
    "ILAVideoOutput",
    "ILAVisionTower",
    "alignment_mask",
    "convert_ila",
    "cosine_loss",
    "create_from_official",
    "frozen_patterns",
    "group_param_counts",
    "ila_rules",
    "jitter_delta",
    "jittered_alignment_mask",
    "load_clip_weights",
    "merge_pairs",
    "official_param_groups",
    "param_group",
    "read_official_checkpoint",
]
