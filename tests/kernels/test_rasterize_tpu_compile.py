"""The rasterizer's Pallas Mosaic kernels (forward and backward) compile for TPU, checked on the CPU host.

`kernels.tpu_compile` compiles ahead of time for a TPU topology that libtpu describes without the chips (deviceless
AOT): XLA:TPU and Mosaic run all the way, so unproven alignments, unsupported layouts and out-of-SMEM / VMEM fail
here as they would on the chip. Nothing runs. Each check is a subprocess, so libtpu never becomes a backend of the
test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kernels.tpu_compile import find_libtpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_libtpu() is None,
        reason="libtpu not found: `make install-test` installs it into .libtpu/ (or set TPU_LIBRARY_PATH)",
    ),
]


def _run(args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    print(proc.stdout)
    print(proc.stderr[-5000:], file=sys.stderr)
    return proc


def test_rasterizer_kernels_compile_for_tpu_v4_v5e():
    """The default case (2k Gaussians, 64x64, 32k slots, RGB + depth): forward and backward kernels."""
    proc = _run(["-m", "kernels.tpu_compile", "--cases", "rasterize", "--generations", "v4,v5e"])
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]


_ND_SCRIPT = textwrap.dedent(
    """
    from kernels.tpu_compile import compile_for_tpu, rasterize_case
    ok = True
    for generation in ("v4", "v5e"):
        fn, args = rasterize_case(300, 32, 4096, features=16)
        report = compile_for_tpu(fn, *args, generation=generation, case="rasterize 16-D features")
        print(generation, report.ok, f"{report.seconds:.1f}s", report.error or "", flush=True)
        ok &= report.ok
    raise SystemExit(0 if ok else 1)
    """
)


def test_rasterizer_kernels_compile_for_tpu_nd_features():
    """16-D features (23 slot fields: more SMEM per chunk buffer and more scalar loads per Gaussian)."""
    proc = _run(["-c", _ND_SCRIPT])
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
