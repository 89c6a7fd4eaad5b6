"""Wild-GS (Xu et al., NeurIPS 2024): the model `wildgs` (`WildGS`, a `models.gs3d` Gaussian pool with intrinsic
features plus the appearance model; importing this package registers it) and its appearance modules: the parsing
UNet (visibility mask + global embedding), the triplane (local embeddings at Gaussian centres) and the fusion MLP to
per-Gaussian SH. `models.wildgs.tasks` registers the task `wildgs` (see README.md)."""

from models.wildgs.appearance import AppearanceEmbeddings, AppearanceModel, AppearanceOutput, FusionMLP
from models.wildgs.convert import (
    convert_resnet18_encoder,
    load_efficientnet_encoder,
    load_resnet18_encoder,
    resnet18_arrays,
)
from models.wildgs.model import ReferenceCache, WildGS, active_aabb, wildgs
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
    "ReferenceCache",
    "ResNetEncoder",
    "TriplaneEncoder",
    "TriplaneOutput",
    "TriplaneUNet",
    "WildGS",
    "active_aabb",
    "backproject_depth",
    "convert_resnet18_encoder",
    "crop_aabb",
    "load_efficientnet_encoder",
    "load_resnet18_encoder",
    "normalise_points",
    "plane_cells",
    "resnet18_arrays",
    "sample_plane",
    "sample_triplane",
    "splat_planes",
    "wildgs",
]
