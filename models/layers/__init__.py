"""The shared blocks of the zoo's models (like `timm.layers`): written once, used by every family.

    from models.layers import Attention, Mlp, DropPath, PatchEmbed, layer_norm, gelu, quick_gelu

Parameter names are the library's own (`qkv`/`q_proj`.., `proj`, `fc1`/`fc2`, `proj` of a patch embedding); where an
official checkpoint names them otherwise, the family's `convert.py` rules map the names. Every attention goes through
`kernels.attention`.
"""

from models.layers.activations import gelu, get_activation, quick_gelu
from models.layers.attention import Attention, chunked_attention
from models.layers.checks import check_image_input
from models.layers.drop import Dropout, DropPath, dropout_stream
from models.layers.mlp import Mlp
from models.layers.norm import LayerNorm, LayerScale, TorchBatchNorm, layer_norm, layer_norm_fn
from models.layers.patch_embed import PatchEmbed, to_pair
from models.layers.resize import bicubic_matrix, resize_bicubic_torch, resize_hw
from models.layers.sharding import (
    SPEC_COLUMN_PARALLEL,
    SPEC_ROW_PARALLEL,
    partitioned,
    sharding_scope,
    trunc_normal_002,
)
from models.layers.variables import Buffer

__all__ = [
    "SPEC_COLUMN_PARALLEL",
    "SPEC_ROW_PARALLEL",
    "Attention",
    "Buffer",
    "DropPath",
    "Dropout",
    "LayerNorm",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "TorchBatchNorm",
    "bicubic_matrix",
    "check_image_input",
    "chunked_attention",
    "dropout_stream",
    "gelu",
    "get_activation",
    "layer_norm",
    "layer_norm_fn",
    "partitioned",
    "quick_gelu",
    "resize_bicubic_torch",
    "resize_hw",
    "sharding_scope",
    "to_pair",
    "trunc_normal_002",
]
