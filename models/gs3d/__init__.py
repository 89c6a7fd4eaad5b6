"""Plain 3-D Gaussian splatting (graphdeco 3DGS) on a fixed-capacity pool: model `gs3d`, task `gs3d` (importing this
package registers the model; `models.gs3d.tasks` registers the task)."""

from models.gs3d.losses import l1, photometric_loss, psnr, ssim
from models.gs3d.model import GaussianSplats, PoolState, gs3d
from models.gs3d.pool import (
    CORE_ATTRIBUTES,
    DensifyStats,
    DensifyThresholds,
    SlotRemap,
    accumulate_stats,
    densify_and_prune,
    densify_demand,
    empty_pool,
    grow,
    init_from_points,
    mean_sq_dist_knn,
    remap_slot_state,
    reset_opacity,
)

__all__ = [
    "CORE_ATTRIBUTES",
    "DensifyStats",
    "DensifyThresholds",
    "GaussianSplats",
    "PoolState",
    "SlotRemap",
    "accumulate_stats",
    "densify_and_prune",
    "densify_demand",
    "empty_pool",
    "grow",
    "gs3d",
    "init_from_points",
    "l1",
    "mean_sq_dist_knn",
    "photometric_loss",
    "psnr",
    "remap_slot_state",
    "reset_opacity",
    "ssim",
]
