"""Wild-GS (Xu et al., NeurIPS 2024) appearance modules: the parsing UNet (visibility mask + global embedding), the
triplane (local embeddings at Gaussian centres) and the fusion MLP to per-Gaussian SH. Pure modules on arrays; the
Gaussians themselves are a `models.gs3d` pool. No task or registered model yet (see README.md)."""

from models.wildgs.appearance import AppearanceEmbeddings, AppearanceModel, AppearanceOutput, FusionMLP
from models.wildgs.convert import convert_resnet18_encoder, load_resnet18_encoder, resnet18_arrays
from models.wildgs.parsing import BasicBlock, ParsingOutput, ParsingUNet, ResNetEncoder
from models.wildgs.triplane import (
    PLANE_AXES,
    PLANE_NAMES,
    TriplaneEncoder,
    TriplaneOutput,
    TriplaneUNet,
    backproject_depth,
    crop_aabb,
    normalise_points,
    plane_cells,
    sample_plane,
    sample_triplane,
    splat_planes,
)

__all__ = [
    "PLANE_AXES",
    "PLANE_NAMES",
    "AppearanceEmbeddings",
    "AppearanceModel",
    "AppearanceOutput",
    "BasicBlock",
    "FusionMLP",
    "ParsingOutput",
    "ParsingUNet",
    "ResNetEncoder",
    "TriplaneEncoder",
    "TriplaneOutput",
    "TriplaneUNet",
    "backproject_depth",
    "convert_resnet18_encoder",
    "crop_aabb",
    "load_resnet18_encoder",
    "normalise_points",
    "plane_cells",
    "resnet18_arrays",
    "sample_plane",
    "sample_triplane",
    "splat_planes",
]
