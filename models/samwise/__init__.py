"""SAMWISE (Cuttano et al., CVPR 2025): SAM2 with text-conditioned temporal adapters for referring video segmentation.
Built so far: the Cross-Modal Temporal adapter (`CMTAdapter`), the Conditional Memory Encoder head
(`ConditionalMemoryEncoder`) and their converters; the text encoders are in
`models.text`."""

from models.samwise.adapter import (
    AdapterCrossAttention,
    CMTAdapter,
    HierarchicalSelectiveAttention,
    sine_time_embedding,
)
from models.samwise.cme import ConditionalMemoryEncoder, SelfAttentionBlock, project_text
from models.samwise.convert import adapter_rules, cme_rules, convert_cme, convert_cmt_adapter, split_mha_in_proj

__all__ = [
    "AdapterCrossAttention",
    "CMTAdapter",
    "ConditionalMemoryEncoder",
    "HierarchicalSelectiveAttention",
    "SelfAttentionBlock",
    "adapter_rules",
    "cme_rules",
    "convert_cme",
    "convert_cmt_adapter",
    "project_text",
    "sine_time_embedding",
    "split_mha_in_proj",
]
