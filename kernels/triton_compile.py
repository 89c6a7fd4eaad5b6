"""Compile the zoo's Pallas Triton kernels to NVIDIA machine code on a host without a GPU, and report their resources.

`jax.export(..., platforms=["cuda"])` runs Pallas -> Triton IR lowering on any host; the Triton IR then sits as
bytecode in each `__gpu$xla.gpu.triton` custom call. This module pulls those kernels out (with the `num_warps`,
`num_stages` and grid that JAX chose), compiles them with the `triton` package (TTIR -> TTGIR -> LLVM -> PTX) for a
given compute capability, and assembles the PTX with the `ptxas` shipped in that package to read the registers,
spills and shared memory per kernel. Nothing here needs a GPU or a CUDA driver.

What it checks is that the kernels compile for the architecture and fit it: shared memory within the per-block
limit, no register spills, at least one block resident per SM. What it does not: the Triton inside XLA (which
compiles these kernels on a GPU machine) is its own build, so its pipeline may differ from the `triton` package's in
details; and nothing here runs a kernel or times it.

    python -m kernels.triton_compile               # attention and rasterizer kernels, sm_80 and sm_90, as a table

Needs the `triton` package (it comes with PyTorch on Linux; test-only here, like torch).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence

import jax

__all__ = ["ARCH_LIMITS", "KernelReport", "TritonKernel", "compile_all", "compile_kernel", "extract_kernels"]

TRITON_CALL = "__gpu$xla.gpu.triton"

# Per compute capability: max dynamic shared memory per block and per SM (bytes), 32-bit registers per SM.
# From the CUDA programming guide's "technical specifications per compute capability".
ARCH_LIMITS = {
    80: {"name": "A100 (sm_80)", "smem_block": 163 * 1024, "smem_sm": 164 * 1024, "regs_sm": 65536},
    90: {"name": "H100 (sm_90)", "smem_block": 227 * 1024, "smem_sm": 228 * 1024, "regs_sm": 65536},
}


@dataclasses.dataclass(frozen=True)
class TritonKernel:
    """One Pallas kernel as JAX lowered it for CUDA."""

    name: str
    num_warps: int
    num_stages: int
    grid: tuple[int, int, int]
    ttir: str  # Triton IR, textual


@dataclasses.dataclass(frozen=True)
class KernelReport:
    name: str
    arch: int
    num_warps: int
    num_stages: int
    grid: tuple[int, int, int]
    shared_bytes: int
    registers: int
    spill_bytes: int  # spill stores + spill loads, as ptxas reports them
    blocks_per_sm: int  # resident blocks per SM allowed by registers and shared memory

    @property
    def fits(self) -> bool:
        return self.shared_bytes <= ARCH_LIMITS[self.arch]["smem_block"] and self.blocks_per_sm >= 1

    def problems(self) -> list[str]:
        out = []
        limit = ARCH_LIMITS[self.arch]
        if self.shared_bytes > limit["smem_block"]:
            out.append(f"{self.shared_bytes} B shared memory > {limit['smem_block']} B per block on {limit['name']}")
        if self.spill_bytes:
            out.append(f"{self.spill_bytes} B of register spills")
        if self.blocks_per_sm < 1:
            out.append("no block fits on one SM")
        return out


def _triton():
    try:
        import triton
        from triton.backends.compiler import GPUTarget
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kernels.triton_compile needs the `triton` package (installed with PyTorch on Linux, e.g. "
            "`pip install -e .[test]`)"
        ) from e
    return triton, GPUTarget


def extract_kernels(fn: Callable, *args) -> list[TritonKernel]:
    """Lowers `fn(*args)` (arrays or `jax.ShapeDtypeStruct`s) for CUDA and returns its Pallas Triton kernels in order.

    `fn` must build its Pallas calls for the GPU even on this host (e.g. `attention_pallas(..., platform="gpu")`,
    `rasterize(..., pallas_backend="triton")`).
    """
    from jax._src.interpreters import mlir
    from jax._src.lib.mlir import ir
    from jax._src.lib.triton import dialect as tt_dialect

    exported = jax.export.export(
        jax.jit(fn), platforms=["cuda"], disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]
    )(*args)
    kernels = []
    ctx = mlir.make_ir_context()
    tt_dialect.register_dialect(ctx)
    with ctx:
        module = ir.Module.parse(exported.mlir_module())
        calls = []

        def visit(op):
            is_call = op.name == "stablehlo.custom_call"
            if is_call and ir.StringAttr(op.attributes["call_target_name"]).value == TRITON_CALL:
                calls.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(visit)
        for op in calls:
            config = ir.DictAttr(op.attributes["mhlo.backend_config"])
            kernel_module = ir.Module.parse(ir.StringAttr(config["ir"]).value_bytes)

            def get(key, config=config):
                return ir.IntegerAttr(config[key]).value

            kernels.append(
                TritonKernel(
                    name=ir.StringAttr(config["name"]).value,
                    num_warps=get("num_warps"),
                    num_stages=get("num_stages"),
                    grid=(get("grid_x"), get("grid_y"), get("grid_z")),
                    ttir=kernel_module.operation.get_asm(enable_debug_info=False),
                )
            )
    if not kernels:
        raise ValueError(
            "no Pallas Triton kernel found in the CUDA lowering; build the Pallas calls for the GPU "
            '(platform="gpu" / pallas_backend="triton", interpret=False)'
        )
    return kernels


def _ptxas_info(ptx: str, arch: int) -> tuple[int, int]:
    triton, _ = _triton()
    ptxas = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(
        os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"
    )
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, f"-arch=sm_{arch}{suffix}", "-v", src, "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode:
        raise RuntimeError(f"ptxas failed for sm_{arch}{suffix}:\n{proc.stderr[-4000:]}")
    regs = re.search(r"Used (\d+) registers", proc.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
    if regs is None or spills is None:
        raise RuntimeError(f"could not read registers / spills from ptxas:\n{proc.stderr[-4000:]}")
    return int(regs.group(1)), int(spills.group(1)) + int(spills.group(2))


def compile_kernel(kernel: TritonKernel, arch: int = 90) -> KernelReport:
    """Compiles one kernel to PTX and cubin for compute capability `arch` (80, 90) and reads its resources."""
    if arch not in ARCH_LIMITS:
        raise ValueError(f"arch must be one of {sorted(ARCH_LIMITS)}; got {arch}")
    triton, GPUTarget = _triton()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{kernel.name}.ttir")
        with open(path, "w") as f:
            f.write(kernel.ttir)
        compiled = triton.compile(
            path,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": kernel.num_warps, "num_stages": kernel.num_stages, "num_ctas": 1},
        )
    registers, spill_bytes = _ptxas_info(compiled.asm["ptx"], arch)
    shared = int(compiled.metadata.shared)
    limit = ARCH_LIMITS[arch]
    threads = 32 * kernel.num_warps
    by_regs = limit["regs_sm"] // max(1, registers * threads)
    by_smem = limit["smem_sm"] // shared if shared else by_regs
    return KernelReport(
        name=kernel.name,
        arch=arch,
        num_warps=kernel.num_warps,
        num_stages=kernel.num_stages,
        grid=kernel.grid,
        shared_bytes=shared,
        registers=registers,
        spill_bytes=spill_bytes,
        blocks_per_sm=min(by_regs, by_smem) if shared <= limit["smem_block"] else 0,
    )


def compile_all(fn: Callable, *args, archs: Sequence[int] = (90,)) -> list[KernelReport]:
    kernels = extract_kernels(fn, *args)
    return [compile_kernel(kernel, arch) for arch in archs for kernel in kernels]


# --------------------------------------------------------------------------------------------------------- CLI


def _table(rows: list[tuple[str, KernelReport]]) -> str:
    lines = [
        "| case | kernel | arch | warps | stages | grid | shared KiB | registers | spills B | blocks/SM | fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r in rows:
        lines.append(
            f"| {case} | {r.name} | sm_{r.arch} | {r.num_warps} | {r.num_stages} | {'x'.join(map(str, r.grid))} | "
            f"{r.shared_bytes / 1024:.1f} | {r.registers} | {r.spill_bytes} | {r.blocks_per_sm} | "
            f"{'yes' if r.fits and not r.spill_bytes else 'NO: ' + '; '.join(r.problems())} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    import jax.numpy as jnp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="80,90", help="compute capabilities, comma separated (80, 90)")
    parser.add_argument("--head-dims", default="32,64,128,256", help="padded head dims (80 and 96 run as 128)")
    parser.add_argument("--out", default=None, help="write the table to this markdown file")
    ns = parser.parse_args(argv)
    archs = [int(a) for a in ns.archs.split(",")]
    from kernels.aot_cases import attention_case, rasterize_case

    cases = []
    for head_dim in (int(h) for h in ns.head_dims.split(",")):
        for dtype in (jnp.bfloat16, jnp.float32):
            name = f"attention d={head_dim} {jnp.dtype(dtype).name}"
            cases.append((name, attention_case("gpu", 2, 1024, 1024, 2, head_dim, dtype)))
        case = attention_case("gpu", 2, 1024, 1024, 2, head_dim, jnp.bfloat16, bias=True, mask=True)
        cases.append((f"attention d={head_dim} bf16 +bias +mask", case))
    cases.append(("rasterize RGB", rasterize_case("triton", 2000, 64, 1 << 15)))
    cases.append(("rasterize 16 features", rasterize_case("triton", 2000, 64, 1 << 15, features=16)))
    rows = []
    for name, (fn, args) in cases:
        for report in compile_all(fn, *args, archs=archs):
            rows.append((name, report))
            print(f"{name:36s} {report.name:32s} sm_{report.arch} smem {report.shared_bytes / 1024:7.1f} KiB "
                  f"regs {report.registers:3d} spills {report.spill_bytes}", flush=True)  # fmt: skip
    table = _table(rows)
    print(table)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(table + "\n")
    bad = [(n, r) for n, r in rows if not r.fits or r.spill_bytes]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
