"""On a GPU (or TPU): the compiled Pallas kernels against the XLA paths, outputs and gradients. Exit 1 on a mismatch.

    python benchmarks/gpu_parity.py [--out results.json]

The CPU test suite runs the same kernels in Pallas interpret mode; this is the check of the real Triton / Mosaic
compilation, to run once on an accelerator before timing anything (`benchmarks/gpu_session.sh` does). References are
computed with `jax.default_matmul_precision("highest")` so that TF32 in the XLA path does not count as an error.

Attention: Pallas vs `kernels.attention(impl="xla")` for the shapes the models use (ViT 197 tokens at head_dim 64,
cross attention 197 x 1030 at head_dim 80 with a relative-position bias and a key-padding mask, one fully masked row,
4096 tokens at head_dim 128 in bf16); gradients wrt q, k, v and the bias.
Rasterizer: `kernels.rasterize(impl="pallas")` vs `impl="xla"` on 20k random Gaussians at 256 x 256 (image, alpha,
depth and the gradients wrt means, quats, scales, opacities, colours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kernels.attention import attention_xla
from kernels.flash_attention import attention_pallas
from kernels.rasterize import rasterize

# (name, batch, seq_q, seq_k, heads, head_dim, dtype, bias shape, mask shape, tolerance on max |diff| / max |ref|)
ATTENTION_CASES = [
    ("vit 197 d64 f32", 4, 197, 197, 6, 64, jnp.float32, None, None, 1e-5),
    ("cross 197x1030 d80 f32 bias+mask", 2, 197, 1030, 4, 80, jnp.float32, (1, 4, 197, 1030), (2, 1, 197, 1030), 1e-5),
    ("vit 197 d64 bf16", 4, 197, 197, 6, 64, jnp.bfloat16, None, None, 2e-2),
    ("seq 4096 d128 bf16", 1, 4096, 4096, 8, 128, jnp.bfloat16, None, None, 2e-2),
    ("sam2 memory 4096x4160 d32 bf16 mask", 1, 4096, 4160, 1, 256 // 8, jnp.bfloat16, None, (1, 1, 1, 4160), 2e-2),
]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def attention_case(name, batch, seq_q, seq_k, heads, head_dim, dtype, bias_shape, mask_shape, tol):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(batch, seq_q, heads, head_dim)), dtype)
    k = jnp.asarray(rng.normal(size=(batch, seq_k, heads, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(batch, seq_k, heads, head_dim)), dtype)
    bias = None if bias_shape is None else jnp.asarray(rng.normal(size=bias_shape), jnp.float32)
    mask = None
    if mask_shape is not None:
        m = rng.random(mask_shape) > 0.3
        m[(0,) * (len(mask_shape) - 1)] = False  # one row with nothing to attend to
        mask = jnp.asarray(m)
    cot = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def run(fn):
        def loss(q, k, v, bias):
            out = fn(q, k, v, bias=bias, mask=mask)
            return jnp.sum(out.astype(jnp.float32) * cot), out

        argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(q, k, v, bias)
        return [out, *grads]

    with jax.default_matmul_precision("highest"):
        ref = run(attention_xla)
    got = run(attention_pallas)
    names = ["out", "dq", "dk", "dv", "dbias"]
    errs = {n: rel_err(g.astype(jnp.float32), r.astype(jnp.float32)) for n, g, r in zip(names, got, ref)}
    finite = all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in got)
    return {"case": name, "errors": errs, "finite": finite, "ok": finite and max(errs.values()) <= tol, "tol": tol}


def rasterize_case(n=20_000, size=256, tol=1e-4):
    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.uniform(-1, 1, (n, 3)), jnp.float32)
    quats = jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)
    scales = jnp.asarray(0.03 * np.exp(rng.normal(0, 0.4, (n, 3))), jnp.float32)
    opacities = jnp.asarray(rng.uniform(0.05, 0.99, n), jnp.float32)
    colors = jnp.asarray(rng.uniform(0, 1, (n, 3)), jnp.float32)
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[2, 3] = 3.5
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)
    viewmat, K = jnp.asarray(viewmat), jnp.asarray(K)
    cot = jnp.asarray(rng.normal(size=(size, size, 3)), jnp.float32)

    def run(impl):
        def loss(*g):
            out = rasterize(*g, viewmat, K, size, size, impl=impl, capacity=40 * n)
            return jnp.sum(out.image * cot) + jnp.sum(out.alpha), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(
            means, quats, scales, opacities, colors
        )
        return out, grads

    with jax.default_matmul_precision("highest"):
        ref_out, ref_grads = run("xla")
        out, grads = run("pallas")
    errs = {
        "image": rel_err(out.image, ref_out.image),
        "alpha": rel_err(out.alpha, ref_out.alpha),
        "depth": rel_err(out.depth, ref_out.depth),
    }
    for name, g, r in zip(["d_means", "d_quats", "d_scales", "d_opacities", "d_colors"], grads, ref_grads):
        errs[name] = rel_err(g, r)
    overflow = bool(jnp.any(out.overflow))
    return {"case": f"rasterize {n} @ {size}^2", "errors": errs, "overflow": overflow,
            "ok": (not overflow) and max(errs.values()) <= tol, "tol": tol}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    ns = parser.parse_args()
    backend = jax.default_backend()
    print(f"jax {jax.__version__} on {backend}: {jax.devices()[0].device_kind}", flush=True)
    if backend == "cpu":
        print("no accelerator: the CPU tests already cover the kernels in interpret mode; nothing to check here")
        return 0
    results = []
    for case in ATTENTION_CASES:
        try:
            results.append(attention_case(*case))
        except Exception as e:  # noqa: BLE001 (report every case, then fail)
            results.append({"case": case[0], "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
        print(json.dumps(results[-1]), flush=True)
    try:
        results.append(rasterize_case())
    except Exception as e:  # noqa: BLE001
        results.append({"case": "rasterize", "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
    print(json.dumps(results[-1]), flush=True)
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump({"jax": jax.__version__, "device": jax.devices()[0].device_kind, "results": results}, f, indent=1)
    failed = [r["case"] for r in results if not r["ok"]]
    print("FAILED: " + ", ".join(failed) if failed else "all kernels match the XLA paths")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
