"""Input checks that say what was expected and how to fix the call."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def check_image_input(x: Any, *, img_size: tuple[int, int], in_chans: int, model: str) -> None:
    """Raise a ValueError saying what was expected when `x` is not a float NHWC batch of the model's size."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    want = f"a float array of shape (batch, {img_size[0]}, {img_size[1]}, {in_chans}) (NHWC)"
    if shape is None or dtype is None:
        raise ValueError(f"{model} expects {want}; got {type(x).__name__}")
    if len(shape) != 4:
        hint = " (add a batch axis: x[None])" if len(shape) == 3 else ""
        raise ValueError(f"{model} expects {want}; got rank {len(shape)} shape {tuple(shape)}{hint}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{model} expects {want}; got dtype {dtype}. Convert images to float and normalise them with the "
            "mean/std of zoo.pretrained_cfg(name)"
        )
    if tuple(shape[1:]) != (img_size[0], img_size[1], in_chans):
        hint = ""
        if shape[1] == in_chans and shape[3] != in_chans:
            hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))"
        elif shape[3] == in_chans:
            hint = f" (build the model with img_size={tuple(shape[1:3])} to run at another resolution)"
        raise ValueError(f"{model} expects {want}; got shape {tuple(shape)}{hint}")
