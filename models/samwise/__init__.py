"""SAMWISE (Cuttano et al., CVPR 2025): SAM2 with text-conditioned temporal adapters for referring video segmentation.
Built so far: the Cross-Modal Temporal adapter (`CMTAdapter`) and its converter; the text encoders are in
`models.text`."""

from models.samwise.adapter import (
    AdapterCrossAttention,
    CMTAdapter,
    HierarchicalSelectiveAttention,
    sine_time_embedding,
)
from models.samwise.convert import adapter_rules, convert_cmt_adapter, split_mha_in_proj

__all__ = [
    "AdapterCrossAttention",
    "CMTAdapter",
    "HierarchicalSelectiveAttention",
    "adapter_rules",
    "convert_cmt_adapter",
    "sine_time_embedding",
    "split_mha_in_proj",
]
