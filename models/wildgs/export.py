"""`.ply` export of a Wild-GS model: the active Gaussians with the SH of one reference appearance, in the INRIA 3DGS
layout (`models.gs3d.export`), so any 3DGS viewer shows the scene as that image's light and colour.

    from models.wildgs.export import save_ply
    save_ply(model, "gaussians.ply", reference=(image_hw3, viewmat, K))   # predicts and caches that appearance first
    save_ply(model, "gaussians.ply")                                      # the appearance cached now
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.gs3d import export as gs3d_export


def set_reference(model, image_hw3, viewmat, K):
    """`model.set_reference` compiled (`nnx.jit`; eager op-by-op dispatch of the parsing UNet is slow on CPU): caches
    that image's appearance in `model` and returns the `AppearanceOutput` (mask, embeddings, SH)."""
    image, viewmat, K = (jnp.asarray(x, jnp.float32) for x in (image_hw3, viewmat, K))
    return _set_reference(model, image, viewmat, K)


@nnx.jit
def _set_reference(model, image, viewmat, K):
    return model.set_reference(image, viewmat, K)


def has_reference(model) -> bool:
    """Whether an appearance is cached: some active Gaussian has non-zero reference SH (`set_reference`,
    `set_interpolated_reference`, or a trained checkpoint, which keeps the last step's)."""
    active = np.asarray(model.active.value, bool)
    return bool(np.any(np.asarray(model.reference_sh.value)[active] != 0))


def save_ply(model, path: str | os.PathLike, *, reference: tuple | None = None) -> Path:
    """Write the active Gaussians of a `WildGS` model with the cached reference SH (`models.gs3d.export.save_ply`).
    `reference` = (image [H, W, 3] in [0, 1], viewmat [4, 4], K [3, 3]) sets that appearance first."""
    if not hasattr(model, "reference_sh"):
        raise TypeError(f"{type(model).__name__} is not a WildGS model; use models.gs3d.export.save_ply")
    if reference is not None:
        if len(reference) != 3:
            raise ValueError("reference must be (image_hw3, viewmat, K)")
        set_reference(model, *reference)
    elif not has_reference(model):
        raise ValueError(
            "no reference appearance is set: call model.set_reference(image, viewmat, K) (or pass reference=...) "
            "before exporting, so the SH of that appearance are written"
        )
    return gs3d_export.save_ply(model, path)
