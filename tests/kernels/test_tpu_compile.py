"""The Pallas Mosaic kernels (attention, rasterizer) compile for TPU v4 and v5e (deviceless AOT with libtpu).

`python -m kernels.tpu_compile` compiles the forward and backward kernels all the way through XLA:TPU and Mosaic, so
running out of VMEM (the whole-sequence K/V blocks of the first TPU attention kernels did at 16k tokens on v4) or an
unsupported access (the first TPU rasterizer kernels' unaligned dynamic VMEM scalar reads, Mosaic E2003) fails here. It runs in a subprocess: libtpu is loaded there, never in the test process. libtpu lives in
.libtpu/ (`make install-test`); without it the test skips and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kernels.tpu_compile import ROOT, find_libtpu

pytestmark = pytest.mark.slow


def run_tpu_compile(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "kernels.tpu_compile", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


needs_libtpu = pytest.mark.skipif(
    find_libtpu() is None, reason="libtpu not installed: `make install-test` puts it in .libtpu/"
)


@needs_libtpu
def test_attention_kernels_compile_for_tpu_v4_and_v5e():
    proc = run_tpu_compile("--cases", "attention", "--generations", "v4,v5e")
    report = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("|"))
    assert proc.returncode == 0, report + proc.stderr[-3000:]
    assert report.count(" ok") >= 2 * 9, report  # every attention case on both generations
    assert "16384" in report and "32768" in report


@needs_libtpu
def test_rasterizer_kernels_compile_for_tpu_v4_and_v5e():
    """RGB (2k Gaussians, 64^2, 32k slots) and 16-D features: forward and backward kernels."""
    proc = run_tpu_compile("--cases", "rasterize", "--generations", "v4,v5e")
    report = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("|"))
    assert proc.returncode == 0, report + proc.stderr[-3000:]
    assert report.count(" ok") == 2 * 2, report


def test_unknown_generation_is_a_clear_error():
    from kernels.tpu_compile import tpu_device

    with pytest.raises(ValueError, match="unknown TPU generation 'v9'"):
        tpu_device("v9")
