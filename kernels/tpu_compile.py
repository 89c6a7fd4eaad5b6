"""Compile the zoo's Pallas Mosaic kernels for TPU generations on a host without a TPU (deviceless AOT).

libtpu can describe a TPU topology and compile for it without the chips (`jax.experimental.topologies`). Programs
are lowered with `SingleDeviceSharding` on one device of that topology (Mosaic kernels are not auto-partitioned), under
`jax.default_device(...)` so that Pallas reads the TPU generation from it, and compiled by XLA:TPU all the way, Mosaic
included: out-of-VMEM, unsupported layouts or tilings fail here exactly as they would on the chip. Nothing runs.

    python -m kernels.tpu_compile                        # every case on v4, v5e, v5p, v6e; table on stdout
    python -m kernels.tpu_compile --generations v5e --out benchmarks/results/tpu_compile.md

libtpu is found through `TPU_LIBRARY_PATH`, else `.libtpu/libtpu/libtpu.so` in the repository (what
`make install-test` installs: `pip install --target .libtpu libtpu==0.0.42.1`, the version jax 0.10.2 pins), else an
importable `libtpu` package. It is kept out of the virtual environment on purpose: with libtpu importable, every JAX
program on a CPU machine would first try to start a TPU backend.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GENERATIONS", "CompileReport", "compile_for_tpu", "find_libtpu", "tpu_device"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# generation -> smallest topology libtpu accepts for it (one host); the first device is the compile target.
GENERATIONS = {"v4": "v4:2x2x1", "v5e": "v5e:2x2", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2"}


def find_libtpu() -> str | None:
    path = os.environ.get("TPU_LIBRARY_PATH")
    if path and os.path.isfile(path):
        return path
    local = os.path.join(ROOT, ".libtpu", "libtpu", "libtpu.so")
    if os.path.isfile(local):
        return local
    try:
        import libtpu

        return libtpu.get_library_path()
    except ImportError:
        return None


@functools.cache
def tpu_device(generation: str):
    """First device of a one-host topology of that generation (a compile target, not a runnable device)."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown TPU generation {generation!r}; choose from {', '.join(GENERATIONS)}")
    path = find_libtpu()
    if path is None:
        raise RuntimeError(
            "libtpu not found: `make install-test` puts it in .libtpu/ (pip install --target .libtpu "
            "libtpu==0.0.42.1), or set TPU_LIBRARY_PATH to a libtpu.so"
        )
    os.environ["TPU_LIBRARY_PATH"] = path
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server here
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chips to guard: skip libtpu's one-process lock
    from jax.experimental import topologies

    return topologies.get_topology_desc(GENERATIONS[generation], "tpu").devices[0]


@dataclasses.dataclass(frozen=True)
class CompileReport:
    case: str
    generation: str
    ok: bool
    seconds: float
    temp_mib: float | None = None  # XLA temporaries in HBM
    code_kib: float | None = None
    error: str | None = None


def compile_for_tpu(fn: Callable, *args, generation: str = "v5e", case: str = "") -> CompileReport:
    """Lowers and compiles jit(fn) for one TPU of `generation`; args are arrays or ShapeDtypeStructs."""
    device = tpu_device(generation)
    sharding = jax.sharding.SingleDeviceSharding(device)
    specs = [jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding) for a in args]
    start = time.perf_counter()
    try:
        with jax.default_device(device):
            compiled = jax.jit(fn).lower(*specs).compile()
    except Exception as e:  # noqa: BLE001 (the report carries the compiler's message)
        message = str(e).split("\n--------------------")[0]
        return CompileReport(case, generation, False, time.perf_counter() - start, error=message[:1500])
    stats = compiled.memory_analysis()
    return CompileReport(
        case,
        generation,
        True,
        time.perf_counter() - start,
        temp_mib=stats.temp_size_in_bytes / 2**20,
        code_kib=stats.generated_code_size_in_bytes / 1024,
    )


# --------------------------------------------------------------------------------------------------------- cases


def default_cases() -> list[tuple[str, tuple[Callable, list]]]:
    from kernels import aot_cases

    def attention_case(*args, **kwargs):
        return aot_cases.attention_case("tpu", *args, **kwargs)

    def rasterize_case(*args, **kwargs):
        return aot_cases.rasterize_case("mosaic_tpu", *args, **kwargs)

    bf16, f32 = jnp.bfloat16, jnp.float32
    return [
        ("attention ViT 197 d64 bf16 bias+mask", attention_case(8, 197, 197, 12, 64, bf16, bias=True, mask=True)),
        ("attention cross 197x1030 d80 bf16", attention_case(2, 197, 1030, 4, 80, bf16)),
        ("attention 1024 d64 f32", attention_case(2, 1024, 1024, 4, 64, f32)),
        ("attention cross 16x1030 d32 f32 key bias", attention_case(1, 16, 1030, 2, 32, f32, bias=(1, 1, 1, 1030))),
        ("attention 300 d64 f32 query bias", attention_case(2, 300, 300, 2, 64, f32, bias=(2, 1, 300, 1))),
        ("attention 4096 d128 bf16", attention_case(2, 4096, 4096, 8, 128, bf16)),
        ("attention SAM2 memory 4096x4160 d256 bf16 mask", attention_case(1, 4096, 4160, 1, 256, bf16, mask=True)),
        ("attention 16384 d64 bf16", attention_case(1, 16384, 16384, 16, 64, bf16)),
        ("attention 32768 d128 bf16", attention_case(1, 32768, 32768, 8, 128, bf16)),
        ("rasterize 2k Gaussians 64^2, 32k slots", rasterize_case(2000, 64, 1 << 15)),
        ("rasterize 300 Gaussians 32^2, 16 features", rasterize_case(300, 32, 4096, features=16)),
    ]


def _table(reports: Sequence[CompileReport]) -> str:
    lines = ["| case | TPU | compiles | seconds | HBM temp MiB | code KiB | error |", "|---|---|---|---|---|---|---|"]
    for r in reports:
        error = (r.error or "").replace("\n", " ").replace("|", "/")[:300]
        temp = "-" if r.temp_mib is None else f"{r.temp_mib:.1f}"
        code = "-" if r.code_kib is None else f"{r.code_kib:.0f}"
        lines.append(f"| {r.case} | {r.generation} | {'yes' if r.ok else 'NO'} | {r.seconds:.1f} | {temp} | {code} | {error} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", default=",".join(GENERATIONS))
    parser.add_argument("--cases", default=None, help="substrings; compile only the cases whose name has one")
    parser.add_argument("--out", default=None, help="write the table to this markdown file")
    ns = parser.parse_args(argv)
    cases = default_cases()
    if ns.cases:
        wanted = ns.cases.split(",")
        cases = [(name, c) for name, c in cases if any(w in name for w in wanted)]
    reports = []
    for generation in ns.generations.split(","):
        for name, (fn, args) in cases:
            report = compile_for_tpu(fn, *args, generation=generation, case=name)
            reports.append(report)
            status = "ok" if report.ok else "FAILED: " + (report.error or "").split("\n")[0][:200]
            print(f"{generation:4s} {name:48s} {report.seconds:5.1f}s {status}", flush=True)
    table = _table(reports)
    print(table)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(table + "\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
