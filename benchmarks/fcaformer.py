"""FcaFormer-L2 speed: our NNX model under `nnx.jit` vs the official PyTorch model (eager), same inputs, same run.

    python benchmarks/fcaformer.py --official-repo /path/to/FcaFormer [--batch 8] [--rounds 3] [--iters 2]
    python benchmarks/fcaformer.py                      # ours only (the official code is not on PyPI)

`--official-repo` is a local checkout of https://github.com/hkzhang-git/FcaFormer (the file
`image_classification/models/fcaformer.py` is imported from it; it needs torch, timm and einops, and its unused
`matplotlib` import is stubbed when matplotlib is missing). Measures a full training step (forward in train mode
with drop path 0.1 and batch-statistics BatchNorm, cross-entropy, backward, AdamW update; f32) and inference
(eval mode, forward only) in images/s. The two implementations are timed in alternating rounds so that a change in
machine load hits both; reported numbers are medians over all timed iterations. Writes
benchmarks/results/fcaformer_<backend>.{json,md}. Compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
import optax
from flax import nnx

import zoo
from benchmarks import common
from benchmarks.common import nnx_classifier_runners, timed, torch_classifier_runners

MODEL = "fcaformer_l2"
DROP_PATH = 0.1  # the L2 recipe


def setup_ours(images: np.ndarray, labels: np.ndarray) -> dict:
    """nnx.jit train step (BatchNorm stats and drop-path RNG updated in place, AdamW via nnx.Optimizer) and inference."""
    model = zoo.create_model(MODEL, rngs=nnx.Rngs(params=0, dropout=1), drop_path_rate=DROP_PATH)
    optimizer = nnx.Optimizer(model, optax.adamw(2e-3, weight_decay=0.05), wrt=nnx.Param)
    return nnx_classifier_runners(model, optimizer, images, labels)


def load_official(repo: str):
    """The official `fcaformer` module from a local checkout (nothing is copied into this repository)."""
    path = os.path.join(repo, "image_classification", "models", "fcaformer.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --official-repo must be a checkout of hkzhang-git/FcaFormer")
    try:
        import matplotlib.pyplot  # noqa: F401  (imported, unused, by the official file)
    except ImportError:
        stub = types.ModuleType("matplotlib")
        stub.pyplot = types.ModuleType("matplotlib.pyplot")
        sys.modules.setdefault("matplotlib", stub)
        sys.modules.setdefault("matplotlib.pyplot", stub.pyplot)
    spec = importlib.util.spec_from_file_location("fcaformer_official", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's @register_model looks the module up
    spec.loader.exec_module(module)
    return module


def setup_official(module, images: np.ndarray, labels: np.ndarray) -> dict:
    """The official model in PyTorch eager: AdamW train step and no-grad inference."""
    import torch

    model = module.fcaformer_l2(drop_path_rate=DROP_PATH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    return torch_classifier_runners(model, optimizer, images, labels)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a markdown table, write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-repo", default=None, help="local checkout of hkzhang-git/FcaFormer")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (ours, official)")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per round and implementation")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 224, 224, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, args.batch).astype(np.int32)
    impls = {"ours (nnx.jit)": setup_ours(images, labels)}
    versions = {"jax": jax.__version__, "flax": __import__("flax").__version__}
    torch_threads = None
    if args.official_repo:
        import torch

        impls["official (torch eager)"] = setup_official(load_official(args.official_repo), images, labels)
        torch_threads = torch.get_num_threads()
        versions.update(torch=torch.__version__, timm=__import__("timm").__version__)

    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "infer": []} for name in impls}
    for kind in ("infer", "train"):
        for name, steps in impls.items():  # warm-up (and compilation for ours)
            timed(steps[kind], args.warmup)
        for _ in range(args.rounds):
            for name, steps in impls.items():
                times[name][kind] += timed(steps[kind], args.iters)

    backend = jax.default_backend()
    rows = {name: {kind: common.median_summary(t, args.batch) for kind, t in kinds.items()} for name, kinds in times.items()}
    ratios = None
    if len(rows) == 2:
        ours, ref = rows["ours (nnx.jit)"], rows["official (torch eager)"]
        ratios = {kind: ours[kind]["images_per_s"] / ref[kind]["images_per_s"] for kind in ("train", "infer")}
    record = {
        "model": MODEL, "batch": args.batch, "image_size": 224, "dtype": "float32", "drop_path_rate": DROP_PATH,
        "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "backend": backend,
        "device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(), "torch_threads": torch_threads,
        "platform": platform.platform(), "versions": versions, "results": rows, "ratio_ours_over_official": ratios,
    }
    lines = [
        f"# {MODEL}: ours (nnx.jit) vs official FcaFormer (PyTorch eager), {backend}",
        "",
        (f"batch {args.batch}, 224 px, float32, AdamW, drop path {DROP_PATH}; median of {args.rounds} x {args.iters} "
         f"timed iterations in alternating rounds after {args.warmup} warm-up; {os.cpu_count()} CPU cores "
         f"(torch threads {torch_threads}); {record['device']}."),
        "",
    ]
    lines += common.classifier_table(rows)
    if ratios:
        lines += ["", f"Ratio ours / official (images/s): train {ratios['train']:.2f}x, inference {ratios['infer']:.2f}x."]
    else:
        lines += ["", "Official model not run (pass --official-repo PATH to compare)."]
    common.write_results(args.out, f"fcaformer_{backend}", record, "\n".join(lines) + "\n", say=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
