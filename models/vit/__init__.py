"""timm-compatible Vision Transformer (importing this package registers the `vit_*` variants)."""

# The ViT's attention, MLP and patch embedding are the shared `models.layers` ones, still importable from here.
from models.layers import Attention, Mlp, PatchEmbed
from models.vit import variants  # noqa: F401  (registration)
from models.vit.convert import convert_vit, resample_abs_pos_embed
from models.vit.model import Block, VisionTransformer

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "VisionTransformer", "convert_vit", "resample_abs_pos_embed"]
