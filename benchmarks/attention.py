"""Attention speed and memory: Pallas flash attention vs the XLA path vs cuDNN, in one run.

    python benchmarks/attention.py                       # backend defaults (GPU: seq 256..16k, head_dim 64/128)
    python benchmarks/attention.py --seqs 256,1024 --head-dims 64 --out /tmp/attention

For each (seq, head_dim) it times the forward pass and forward+backward (grads wrt q, k, v) of every implementation
available on the backend, reads the compiled program's peak memory (XLA memory analysis: arguments + outputs + temp
buffers), and reports times and memory as ratios to the XLA path. Writes `<out>.json` and `<out>.md`
(default `benchmarks/results/attention_<backend>`).

Implementations: "xla" (kernels.attention impl="xla", plain jnp), "pallas" (kernels.flash_attention, GPU/TPU only;
interpret mode on CPU would measure the interpreter, not the kernel), "cudnn"
(`jax.nn.dot_product_attention(implementation="cudnn")`, GPU only). Shapes: bf16, heads = 1024 // head_dim (a
1024-wide model), batch = max(1, tokens // seq) so every row moves about the same number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kernels.attention import attention_xla

DEFAULTS = {
    "gpu": {"seqs": "256,512,1024,2048,4096,8192,16384", "tokens": 32768, "iters": 10},
    "tpu": {"seqs": "256,512,1024,2048,4096,8192,16384", "tokens": 32768, "iters": 10},
    "cpu": {"seqs": "256,512,1024", "tokens": 1024, "iters": 3},
}


def implementations(backend: str) -> dict:
    """name -> attention function(q, k, v) for the implementations this backend can run."""
    impls = {"xla": lambda q, k, v: attention_xla(q, k, v)}
    if backend in ("gpu", "tpu"):
        from kernels.flash_attention import attention_pallas

        impls["pallas"] = lambda q, k, v: attention_pallas(q, k, v)
    if backend == "gpu":
        impls["cudnn"] = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    return impls


def peak_bytes(compiled) -> int | None:
    """Peak device memory of a compiled program per XLA's memory analysis (None where the backend has none)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 (some backends do not implement it)
        return None
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )


def time_compiled(compiled, args, iters: int) -> float:
    """Median wall time in milliseconds over `iters` runs after one warm-up run."""
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(fn, mode: str, q, k, v, iters: int) -> dict:
    if mode == "fwd":
        program = jax.jit(fn)
    else:

        def loss(q, k, v):
            return jnp.sum(fn(q, k, v).astype(jnp.float32))

        program = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    try:
        compiled = program.lower(q, k, v).compile()
        return {
            "status": "ok",
            "time_ms": time_compiled(compiled, (q, k, v), iters),
            "peak_bytes": peak_bytes(compiled),
        }
    except Exception as error:  # noqa: BLE001 (OOM or an unsupported shape is a result, not a crash)
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        status = "oom" if "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower() else "error"
        return {"status": status, "error": message}


def run(args) -> dict:
    backend = jax.default_backend()
    impls = implementations(backend)
    if args.impls:
        impls = {name: fn for name, fn in impls.items() if name in args.impls.split(",")}
    dtype = jnp.dtype(args.dtype)
    records = []
    for head_dim in [int(x) for x in args.head_dims.split(",")]:
        heads = max(1, 1024 // head_dim)
        for seq in [int(x) for x in args.seqs.split(",")]:
            batch = max(1, args.tokens // seq)
            rng = np.random.default_rng(0)
            q, k, v = (jnp.asarray(rng.normal(size=(batch, seq, heads, head_dim)), dtype) for _ in range(3))
            for mode in ("fwd", "fwd+bwd"):
                for name, fn in impls.items():
                    result = measure(fn, mode, q, k, v, args.iters)
                    record = {
                        "impl": name,
                        "mode": mode,
                        "seq": seq,
                        "head_dim": head_dim,
                        "heads": heads,
                        "batch": batch,
                        "dtype": dtype.name,
                        **result,
                    }
                    records.append(record)
                    print(json.dumps(record), flush=True)
            del q, k, v
    # Ratios to the XLA path of the same (seq, head_dim, mode): < 1 means faster / smaller than XLA.
    baseline = {(r["seq"], r["head_dim"], r["mode"]): r for r in records if r["impl"] == "xla" and r["status"] == "ok"}
    for r in records:
        base = baseline.get((r["seq"], r["head_dim"], r["mode"]))
        if r["status"] == "ok" and base is not None:
            r["time_ratio_vs_xla"] = r["time_ms"] / base["time_ms"]
            if r.get("peak_bytes") and base.get("peak_bytes"):
                r["memory_ratio_vs_xla"] = r["peak_bytes"] / base["peak_bytes"]
    device = jax.devices()[0]
    return {
        "backend": backend,
        "device": getattr(device, "device_kind", str(device)),
        "jax": jax.__version__,
        "host": host_platform.platform(),
        "cpu_count": os.cpu_count(),
        "dtype": dtype.name,
        "iters": args.iters,
        "tokens_per_row": args.tokens,
        "records": records,
    }


def _cell(record: dict | None, key: str, ratio_key: str, unit_scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    if record is None:
        return "-"
    if record["status"] != "ok":
        return record["status"].upper()
    value = record.get(key)
    if value is None:
        return "n/a"
    text = fmt.format(value * unit_scale)
    if ratio_key in record and record["impl"] != "xla":
        text += f" ({record[ratio_key]:.2f}x)"
    return text


def markdown(result: dict) -> str:
    impl_names = list(dict.fromkeys(r["impl"] for r in result["records"]))
    title = (
        f"Attention benchmark on {result['device']} ({result['backend']}), jax {result['jax']}, {result['dtype']}, "
        f"median of {result['iters']} runs; heads = 1024 // head_dim, batch = max(1, {result['tokens_per_row']} // "
        "seq). Ratios in parentheses are relative to the XLA path (< 1 = faster / less memory)."
    )
    lines = [title, ""]
    for mode in ("fwd", "fwd+bwd"):
        header = ["seq", "head_dim", "batch"]
        header += [f"{name} ms" for name in impl_names] + [f"{name} peak MiB" for name in impl_names]
        lines += [f"**{mode}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        keys = sorted({(r["seq"], r["head_dim"]) for r in result["records"]}, key=lambda x: (x[1], x[0]))
        for seq, head_dim in keys:
            by_impl = {
                r["impl"]: r
                for r in result["records"]
                if r["seq"] == seq and r["head_dim"] == head_dim and r["mode"] == mode
            }
            batch = next(iter(by_impl.values()))["batch"]
            row = [str(seq), str(head_dim), str(batch)]
            row += [_cell(by_impl.get(name), "time_ms", "time_ratio_vs_xla") for name in impl_names]
            row += [
                _cell(by_impl.get(name), "peak_bytes", "memory_ratio_vs_xla", 1 / 2**20, "{:.1f}")
                for name in impl_names
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    backend = jax.default_backend()
    defaults = DEFAULTS.get(backend, DEFAULTS["cpu"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", default=defaults["seqs"], help="comma-separated sequence lengths (seq_q = seq_k)")
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, default=defaults["tokens"], help="batch = max(1, tokens // seq)")
    parser.add_argument("--iters", type=int, default=defaults["iters"])
    parser.add_argument("--impls", default="", help="comma-separated subset of xla,pallas,cudnn")
    parser.add_argument(
        "--out",
        default=f"benchmarks/results/attention_{backend}",
        help="output path without extension; writes .json and .md",
    )
    args = parser.parse_args(argv)
    result = run(args)
    out = args.out.removesuffix(".json").removesuffix(".md")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    table = markdown(result)
    with open(out + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
