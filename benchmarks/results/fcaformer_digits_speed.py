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
import numpy as np
import optax
from flax import nnx

import zoo
from benchmarks.common import nnx_classifier_runners
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
    images = rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, args.batch).astype(np.int32)
    runners = {}
    for label, (name, overrides) in MODELS.items():
        model = zoo.create_model(name, rngs=nnx.Rngs(0), **overrides)
        optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=0.05), wrt=nnx.Param)

        run = nnx_classifier_runners(model, optimizer, images, labels)
        run["train"](), run["infer"]()  # compile
        params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        runners[label] = (run, params)
    times = {label: {"train": [], "infer": []} for label in runners}
    for _ in range(args.rounds):
        for label, (run, _) in runners.items():
            for mode in ("train", "infer"):
                start = time.perf_counter()
                for _ in range(args.steps):
                    run[mode]()
                times[label][mode].append(args.batch * args.steps / (time.perf_counter() - start))
    print(f"| model | params | train img/s (median of {args.rounds}) | inference img/s |")
    print("|---|---|---|---|")
    for label, (_, params) in runners.items():
        print(
            f"| {label} | {params:,} | {statistics.median(times[label]['train']):.0f} | "
            f"{statistics.median(times[label]['infer']):.0f} |"
        )


if __name__ == "__main__":
    main()
