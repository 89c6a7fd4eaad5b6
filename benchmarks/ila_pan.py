"""The reduced-scale ILA comparison on real offline video, in one command:

    python -m benchmarks.ila_pan --runs runs

Trains three models of the same size from random init on `video_pan_direction` (real frames of vtest, tree, bikes
and carphone with a virtual camera pan; 4 classes, chance 25%; zoo/data/video_pan.py), each with the shared trainer:
1. ILA (configs/ila.py:pan): the ILA block in every layer, then the MIT head;
2. the same model with the ILA blocks off (configs/ila.py:pan_no_ila): plain CLIP blocks + MIT, X-CLIP-style temporal
   modelling over frame tokens, the baseline ILA claims to improve on;
3. frame averaging (configs/ila.py:pan_frame_avg): plain CLIP blocks, the mean of the frame tokens.
Then scores each on the held-out clips (the last 20% of every video in time): top-1, top-1 per pan speed, and the
confusion matrix. A run whose workdir has a `summary.json` is not trained again (the trainer resumes stopped runs).
Writes `<runs>/ila_pan_results.json`, `.md` (recorded in benchmarks/results/ila_pan.md) and
`<runs>/ila_pan_confusion.png` (`--seed N`: workdirs and files with a `_seedN` suffix).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import jax
import numpy as np

log = logging.getLogger("zoo.ila")

VARIANTS = {
    "pan": "ILA",
    "pan_no_ila": "ILA blocks off (CLIP + MIT)",
    "pan_frame_avg": "frame averaging",
}


def _train(config, workdir: str) -> dict[str, Any]:
    from benchmarks.common import train_unless_done

    return train_unless_done(config, workdir, log)


def predictions(config, workdir: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted labels) of the run in `workdir` on its config's held-out clips, as the task evaluates."""
    import zoo
    from models.ila.tasks import ILAVideoTask

    task = ILAVideoTask(config)
    model = zoo.create_model(config.model.name, pretrained=workdir, **config.model.overrides.to_dict())
    model.eval()
    predict = jax.jit(lambda videos: task.call_model(model, videos, {}, train=False))
    labels, predicted = [], []
    for batch in task.eval_batches(process_index=0, process_count=1):
        logits = predict(batch["video"])
        logits = logits[0] if isinstance(logits, tuple) else getattr(logits, "logits", logits)
        keep = np.asarray(batch["mask"]).astype(bool)
        labels.append(np.asarray(batch["label"])[keep])
        predicted.append(np.asarray(logits).argmax(-1)[keep])
    return np.concatenate(labels), np.concatenate(predicted)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _plot(results: dict[str, Any], class_names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.7))
    for ax, (variant, result) in zip(np.atleast_1d(axes), results.items(), strict=True):
        matrix = np.asarray(result["confusion"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "k")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_title(f"{VARIANTS[variant]}\ntop-1 {result['top1']:.3f}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(runs: str, *, variants: list[str], steps: int | None = None, seed: int = 0) -> dict[str, Any]:
    from configs.ila import get_config
    from zoo.data import PAN_CLASSES, get_source

    results = {}
    for variant in variants:
        config = get_config(variant)
        if steps:
            config.num_train_steps = steps
        config.seed = seed
        workdir = os.path.join(runs, f"ila_{variant}" + (f"_seed{seed}" if seed else ""))
        summary = _train(config, workdir)
        labels, predicted = predictions(config, workdir)
        source = get_source(config.data.eval.name, split=config.data.eval.split, **config.data.eval.kwargs.to_dict())
        speeds = source.entries[:, 3]
        if len(speeds) != len(labels):
            raise RuntimeError(f"{len(labels)} predictions for {len(speeds)} held-out clips")
        results[variant] = {
            "top1": float(np.mean(labels == predicted)),
            "trainer_eval_top1": summary.get("eval/top1"),
            "top1_by_speed": {int(s): float(np.mean((labels == predicted)[speeds == s])) for s in np.unique(speeds)},
            "confusion": confusion_matrix(labels, predicted, len(PAN_CLASSES)).tolist(),
            "steps": summary.get("step"),
            "wall_time_s": summary.get("wall_time_s"),
            "num_eval_clips": len(labels),
        }
    tag = f"_seed{seed}" if seed else ""
    with open(os.path.join(runs, f"ila_pan_results{tag}.json"), "w") as f:
        json.dump(results, f, indent=2)
    _plot(results, list(PAN_CLASSES), os.path.join(runs, f"ila_pan_confusion{tag}.png"))
    lines = [
        "| model (same size, random init) | held-out top-1 | by speed 1 / 2 / 3 px per frame | steps |",
        "|---|---|---|---|",
    ]
    for variant, result in results.items():
        by_speed = " / ".join(f"{v:.3f}" for v in result["top1_by_speed"].values())
        lines.append(f"| {VARIANTS[variant]} (`configs/ila.py:{variant}`) | {result['top1']:.3f} | {by_speed} | "
                     f"{result['steps']} |")
    lines += ["", "Confusion matrices (rows: true " + ", ".join(PAN_CLASSES) + "; columns: predicted):", ""]
    for variant, result in results.items():
        lines.append(f"- {VARIANTS[variant]}: {result['confusion']}")
    table = "\n".join(lines)
    with open(os.path.join(runs, f"ila_pan_results{tag}.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m benchmarks.ila_pan --runs DIR [--variants pan pan_no_ila ...] [--steps N]`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="parent directory of the three workdirs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="override num_train_steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="config.seed; a nonzero seed gets its own workdirs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    run(args.runs, variants=args.variants, steps=args.steps, seed=args.seed)


if __name__ == "__main__":
    main()
