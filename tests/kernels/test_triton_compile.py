"""The Pallas Triton kernels compile to sm_90 (H100) machine code and fit it: no register spills, shared memory within
the per-block limit, at least one block per SM. Runs on the CPU host with the `triton` package and its ptxas
(`kernels.triton_compile`); a GPU is not needed.

Cases are the tiles the models use on GPU: ViT / CLIP (head_dim 64, relative-position bias + key-padding mask),
Hiera and FcaFormer head dims padded to 128, SAM2 memory attention (one head of 256), float32 at "highest" precision,
and the rasterizer's compositing forward / backward with RGB and N-D features.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("triton", reason="the triton package (installed with torch on Linux) compiles the kernels")

from kernels import triton_compile as tc
from kernels.aot_cases import attention_case, rasterize_case
from kernels.flash_attention import triton_tiles

pytestmark = pytest.mark.slow

ATTENTION = [
    ("vit d64 bf16 bias+mask", 64, jnp.bfloat16, True, True),
    ("hiera d96->128 bf16", 96, jnp.bfloat16, False, False),
    ("sam2 memory d256 bf16 mask", 256, jnp.bfloat16, False, True),
    ("d64 f32", 64, jnp.float32, False, False),
    ("d128 f32 bias", 128, jnp.float32, True, False),
]


def _check(reports, expected_names):
    assert [r.name for r in reports] == expected_names
    for r in reports:
        assert r.fits and r.spill_bytes == 0, (r.name, r.problems())
        assert r.registers <= 255 and r.shared_bytes > 0


@pytest.mark.parametrize("name,head_dim,dtype,bias,mask", ATTENTION, ids=[c[0] for c in ATTENTION])
def test_attention_kernels_compile_for_h100_without_spills(name, head_dim, dtype, bias, mask):
    fn, args = attention_case("gpu", 2, 197, 300, 2, head_dim, dtype, bias=bias, mask=mask)
    kernels = tc.extract_kernels(fn, *args)
    pad = max(16, 1 << (head_dim - 1).bit_length())
    tiles = triton_tiles(pad, dtype)
    assert [(k.num_warps, k.num_stages) for k in kernels] == [
        (tiles.warps, tiles.stages),
        (tiles.warps_bwd, tiles.stages),
        (tiles.warps_bwd, tiles.stages),
    ]
    reports = [tc.compile_kernel(k, arch=90) for k in kernels]
    _check(reports, ["flash_attention_forward", "flash_attention_dkv", "flash_attention_dq"])


@pytest.mark.parametrize("features", [3, 16])
def test_rasterizer_kernels_compile_for_h100_without_spills(features):
    fn, args = rasterize_case("triton", 300, 32, 4096, features=features)
    reports = tc.compile_all(fn, *args, archs=(90,))
    _check(reports, ["gaussian_composite_fwd", "gaussian_composite_bwd"])


def test_spilling_tiles_are_reported():
    """The check can fail: float32 at head_dim 32 with the bf16 tiles (128 x 64, 4 warps) spills."""
    from kernels.flash_attention import attention_pallas

    q = jax.ShapeDtypeStruct((1, 256, 1, 32), jnp.float32)

    def fwd(q, k, v):
        return attention_pallas(q, k, v, interpret=False, platform="gpu", block_q=128, block_k=64)

    (kernel,) = tc.extract_kernels(fwd, q, q, q)
    report = tc.compile_kernel(dataclasses.replace(kernel, num_warps=4, num_stages=2), arch=90)
    assert report.spill_bytes > 0
    assert any("spills" in p for p in report.problems())


def test_no_triton_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="no Pallas Triton kernel"):
        tc.extract_kernels(lambda x: x * 2, jax.ShapeDtypeStruct((4,), jnp.float32))
