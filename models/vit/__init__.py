"""timm-compatible Vision Transformer (importing this package registers the `vit_*` variants)."""

from models.vit import variants  # noqa: F401  (registration)
from models.vit.convert import convert_vit, resample_abs_pos_embed
from models.vit.model import Attention, Block, Mlp, PatchEmbed, VisionTransformer

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "VisionTransformer", "convert_vit", "resample_abs_pos_embed"]
