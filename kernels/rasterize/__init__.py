"""Differentiable 3-D Gaussian splatting: projection, SH, tile binning and compositing (XLA and Pallas paths).

Entry point: `rasterize(...)` (dispatcher, `impl="auto"|"xla"|"pallas"`). Building blocks are exported for
tests, Wild-GS and custom pipelines.
"""

from kernels.rasterize.api import (
    IntersectionOverflowError,
    RasterOutput,
    check_overflow,
    default_impl,
    rasterize,
    suggest_capacity,
)
from kernels.rasterize.binning import TileBins, bin_gaussians
from kernels.rasterize.composite import composite
from kernels.rasterize.config import CompositeConfig
from kernels.rasterize.conventions import CONVENTIONS, Convention, get_convention
from kernels.rasterize.projection import Projection, covariance_3d, project_gaussians, quat_to_rotmat
from kernels.rasterize.sh import eval_sh, sh_basis

__all__ = [
    "CONVENTIONS",
    "CompositeConfig",
    "Convention",
    "IntersectionOverflowError",
    "Projection",
    "RasterOutput",
    "TileBins",
    "bin_gaussians",
    "check_overflow",
    "composite",
    "covariance_3d",
    "default_impl",
    "eval_sh",
    "get_convention",
    "project_gaussians",
    "quat_to_rotmat",
    "rasterize",
    "sh_basis",
    "suggest_capacity",
]
