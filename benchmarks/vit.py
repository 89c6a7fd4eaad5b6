"""ViT-B/16 speed on this machine: our NNX model under `jax.jit` vs timm in PyTorch eager, same inputs, same run.

    python benchmarks/vit.py [--model vit_base_patch16_224] [--batch 8] [--iters 5] [--warmup 2]

Measures a full training step (forward, cross-entropy, backward, AdamW update; f32) and inference (forward only)
in images/s, prints the table and the ratio ours / timm, and writes benchmarks/results/vit_<backend>.{json,md}.
Timings depend on the machine and its load: compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import zoo
from benchmarks.common import (
    RESULTS_DIR,
    classifier_table,
    median_summary,
    timed,
    torch_classifier_runners,
    write_results,
)


def _time(step, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    return timed(step, iters)


def bench_ours(name: str, images: np.ndarray, labels: np.ndarray, iters: int, warmup: int) -> dict[str, list[float]]:
    """jax.jit train step (split params, optax.adamw, donated state) and jitted inference."""
    model = zoo.create_model(name, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = tx.init(params)
    x, y = jnp.asarray(images), jnp.asarray(labels)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    state = {"params": params, "opt": opt_state}

    def run_train():
        state["params"], state["opt"], loss = train_step(state["params"], state["opt"], x, y)
        loss.block_until_ready()

    infer = jax.jit(lambda params, x: nnx.merge(graphdef, params)(x))

    def run_infer():
        infer(state["params"], x).block_until_ready()

    return {"train": _time(run_train, iters, warmup), "infer": _time(run_infer, iters, warmup)}


def bench_timm(name: str, images: np.ndarray, labels: np.ndarray, iters: int, warmup: int) -> dict[str, list[float]]:
    """timm model in PyTorch eager: AdamW train step and no-grad inference."""
    import timm
    import torch

    model = timm.create_model(name, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    runners = torch_classifier_runners(model, optimizer, images, labels)
    return {"train": _time(runners["train"], iters, warmup), "infer": _time(runners["infer"], iters, warmup)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 224, 224, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, args.batch).astype(np.int32)
    results = {
        "ours (jax.jit)": bench_ours(args.model, images, labels, args.iters, args.warmup),
        "timm (torch eager)": bench_timm(args.model, images, labels, args.iters, args.warmup),
    }
    backend = jax.default_backend()
    rows = {impl: {kind: median_summary(t, args.batch) for kind, t in times.items()} for impl, times in results.items()}
    ours, ref = rows["ours (jax.jit)"], rows["timm (torch eager)"]
    ratios = {kind: ours[kind]["images_per_s"] / ref[kind]["images_per_s"] for kind in ("train", "infer")}
    record = {
        "model": args.model,
        "batch": args.batch,
        "image_size": 224,
        "dtype": "float32",
        "iters": args.iters,
        "warmup": args.warmup,
        "backend": backend,
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": {"jax": jax.__version__, "flax": __import__("flax").__version__,
                     "torch": torch.__version__, "timm": __import__("timm").__version__},
        "results": rows,
        "ratio_ours_over_timm": ratios,
    }
    lines = [
        f"# {args.model}: ours (jax.jit) vs timm (PyTorch eager), {backend}",
        "",
        (f"batch {args.batch}, 224 px, float32, AdamW; median of {args.iters} timed iterations after {args.warmup} "
        f"warm-up; {os.cpu_count()} CPU cores (torch threads {torch.get_num_threads()}); {record['device']}."),
        "",
    ]
    lines += classifier_table(rows)
    lines += ["", f"Ratio ours / timm (images/s): train {ratios['train']:.2f}x, inference {ratios['infer']:.2f}x.", ""]
    write_results(args.out, f"vit_{backend}", record, "\n".join(lines), say=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
