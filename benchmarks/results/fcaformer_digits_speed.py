"""Train-step and inference throughput of the digits FcaFormer vs the same-size ViT, interleaved in one process.

    JAX_PLATFORMS=cpu python benchmarks/results/fcaformer_digits_speed.py [--rounds 5] [--steps 5]

Batch 128 at 32x32, AdamW, f32, the models of configs/fcaformer.py:digits and benchmarks/results/fcaformer_digits.sh.
Rounds alternate between the two models so that load from other jobs hits both alike; prints the median per model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import zoo
from configs.fcaformer import DIGITS_MODEL

VIT_OVERRIDES = {"img_size": 32, "patch_size": 4, "num_classes": 10, "embed_dim": 176, "depth": 4, "num_heads": 4,
                 "drop_path_rate": 0.0}  # fmt: skip
MODELS = {
    "fcaformer (digits)": ("fcaformer_l1", dict(DIGITS_MODEL)),
    "vit 176x4 p4": ("vit_tiny_patch16_224", VIT_OVERRIDES),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 10, args.batch))
    runners = {}
    for label, (name, overrides) in MODELS.items():
        model = zoo.create_model(name, rngs=nnx.Rngs(0), **overrides)
        optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=0.05), wrt=nnx.Param)

        @nnx.jit
        def train_step(model, optimizer, x, y):
            def loss_fn(model):
                logits = model(x, train=True)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        infer = nnx.jit(lambda model, x: model(x, train=False))
        train_step(model, optimizer, images, labels).block_until_ready()
        infer(model, images).block_until_ready()
        params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        runners[label] = (model, optimizer, train_step, infer, params)
    times = {label: {"train": [], "infer": []} for label in runners}
    for _ in range(args.rounds):
        for label, (model, optimizer, train_step, infer, _) in runners.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = train_step(model, optimizer, images, labels)
            loss.block_until_ready()
            times[label]["train"].append(args.batch * args.steps / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(args.steps):
                out = infer(model, images)
            out.block_until_ready()
            times[label]["infer"].append(args.batch * args.steps / (time.perf_counter() - start))
    print(f"| model | params | train img/s (median of {args.rounds}) | inference img/s |")
    print("|---|---|---|---|")
    for label, (*_, params) in runners.items():
        print(
            f"| {label} | {params:,} | {statistics.median(times[label]['train']):.0f} | "
            f"{statistics.median(times[label]['infer']):.0f} |"
        )


if __name__ == "__main__":
    main()
