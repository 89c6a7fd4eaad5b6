"""The Pallas compositing kernels (forward and backward) lower to Triton for CUDA, checked ahead of time on CPU.

`jax.export` for platform "cuda" runs the Pallas -> Triton IR lowering in Python without a GPU, so unsupported
operations, block shapes or ref indexing fail here. (Triton -> PTX compilation and Mosaic TPU lowering, which needs
a TPU device kind, are not covered on CPU.)
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp

from kernels.rasterize import rasterize

sys.path.insert(0, os.path.dirname(__file__))
from rasterize_helpers import intrinsics, look_at, random_scene


def test_pallas_kernels_lower_to_triton():
    width = height = 32
    scene = [jnp.asarray(a) for a in random_scene(40, seed=0)]
    viewmat, K = jnp.asarray(look_at([0.3, -0.5, -3.5], [0, 0, 0])), jnp.asarray(intrinsics(width, height, 30.0))

    def loss(*gaussians):
        out = rasterize(*gaussians, viewmat, K, width, height, impl="pallas", interpret=False, capacity=1024,
                        pallas_backend="triton")  # fmt: skip
        return jnp.sum(out.image) + jnp.sum(out.alpha)

    unchecked = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    exported = jax.export.export(
        jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))), platforms=["cuda"], disabled_checks=unchecked
    )(*scene)
    text = exported.mlir_module()
    assert text.count("__gpu$xla.gpu.triton") >= 2  # forward and backward kernels
