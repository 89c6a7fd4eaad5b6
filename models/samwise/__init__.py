"""SAMWISE (Cuttano et al., CVPR 2025): SAM2 with text-conditioned temporal adapters for referring video segmentation.

Importing the package registers `samwise_sam2_{tiny,base_plus,large}` with `zoo`. `SAMWISE` is the whole model (early
fusion of Hiera and RoBERTa through the CMT adapters, the text-prompted SAM2 heads, the memory and the Conditional
Memory Encoder); `convert_samwise` maps an official SAMWISE checkpoint onto it.
"""

from models.samwise.adapter import (
    AdapterCrossAttention,
    CMTAdapter,
    HierarchicalSelectiveAttention,
    sine_time_embedding,
)
from models.samwise.cme import ConditionalMemoryEncoder, SelfAttentionBlock, project_text
from models.samwise.convert import (
    adapter_rules,
    cme_rules,
    convert_cme,
    convert_cmt_adapter,
    convert_samwise,
    samwise_rules,
    split_mha_in_proj,
)
from models.samwise.model import (
    FROZEN_PATTERNS,
    SAMWISE,
    SAMWISEConfig,
    apply_switch,
    same_object_labels,
    trainable_parameters,
)
from models.samwise.variants import build_samwise

__all__ = [
    "FROZEN_PATTERNS",
    "SAMWISE",
    "AdapterCrossAttention",
    "CMTAdapter",
    "ConditionalMemoryEncoder",
    "HierarchicalSelectiveAttention",
    "SAMWISEConfig",
    "SelfAttentionBlock",
    "adapter_rules",
    "apply_switch",
    "build_samwise",
    "cme_rules",
    "convert_cme",
    "convert_cmt_adapter",
    "convert_samwise",
    "project_text",
    "same_object_labels",
    "samwise_rules",
    "sine_time_embedding",
    "split_mha_in_proj",
    "trainable_parameters",
]
