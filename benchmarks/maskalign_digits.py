"""The reduced-scale MaskAlign run on real offline digits, in one command:

    python -m benchmarks.maskalign_digits --runs runs

1. teacher: configs/vit.py:digits (a small ViT classifier on scikit-learn's 1797 digits), scored on opencv-doc's
   held-out digits too (the other source: the domain the student pre-trains on);
2. MaskAlign pre-training (configs/maskalign.py:digits) of a student of the same size on opencv-doc's 4000 training
   digits, without their labels, the teacher frozen;
3. fine-tuning with 20 labels per class (200 images) from the MaskAlign student (configs/maskalign.py:digits_finetune)
4. the same fine-tuning from random init (configs/maskalign.py:digits_scratch);
5. ablation: pre-training with random masking (configs/maskalign.py:digits_random_mask) and the same fine-tuning.

Each step is skipped when its workdir already has a `summary.json` (the trainer also resumes interrupted steps).
Writes `<runs>/maskalign_digits_results.json` and `.md` (recorded in benchmarks/results/maskalign_digits.md) (held-out top-1 of 2-4 and the teacher's, and the alignment
loss before / after pre-training).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np

log = logging.getLogger("zoo.maskalign")


def _train(config, workdir: str) -> dict[str, Any]:
    from benchmarks.common import train_unless_done

    return train_unless_done(config, workdir, log)


def teacher_accuracy(teacher_dir: str, source: str = "opencv_digits", split: str = "test") -> float:
    """Top-1 of the teacher classifier (an orbax run of configs/vit.py:digits) on `source`'s `split`, evaluated as
    configs/vit.py:digits evaluates (16 px, its normalisation)."""
    import zoo
    from configs.vit import get_config
    from zoo.tasks.classification import ClassificationTask

    config = get_config("digits")
    config.data.eval.name, config.data.eval.split = source, split
    task = ClassificationTask(config)
    model = zoo.create_model(config.model.name, pretrained=teacher_dir)
    model.eval()
    predict = jax.jit(lambda images: model(images).argmax(-1))
    correct = count = 0.0
    for batch in task.eval_batches(process_index=0, process_count=1):
        hits = np.asarray(predict(batch["image"])) == batch["label"]
        correct += float(np.sum(hits * batch["mask"]))
        count += float(np.sum(batch["mask"]))
    return correct / count


def _eval_history(workdir: str, key: str) -> list[tuple[int, float]]:
    out = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if key in record:
                out.append((int(record["step"]), float(record[key])))
    return out


def run(runs: str, *, pretrain_steps: int | None = None) -> dict[str, Any]:
    from configs import maskalign as maskalign_configs
    from configs import vit as vit_configs

    teacher_dir = os.path.join(runs, "vit_digits")
    pretrain_dir = os.path.join(runs, "maskalign_digits")
    _train(vit_configs.get_config("digits"), teacher_dir)

    pretrain = maskalign_configs.get_config("digits")
    pretrain.model.teacher = teacher_dir
    if pretrain_steps:
        pretrain.num_train_steps = pretrain_steps
    pre_summary = _train(pretrain, pretrain_dir)

    finetune = maskalign_configs.get_config("digits_finetune")
    finetune.model.pretrained = os.path.join(pretrain_dir, "maskalign_pretrain.npz")
    ft_summary = _train(finetune, os.path.join(runs, "maskalign_digits_ft"))
    scratch_summary = _train(maskalign_configs.get_config("digits_scratch"), os.path.join(runs, "maskalign_digits_scratch"))

    # Ablation: the same pre-training with random instead of attention-guided masking, and its fine-tune.
    random_dir = os.path.join(runs, "maskalign_digits_random_mask")
    random_pretrain = maskalign_configs.get_config("digits_random_mask")
    random_pretrain.model.teacher = teacher_dir
    if pretrain_steps:
        random_pretrain.num_train_steps = pretrain_steps
    _train(random_pretrain, random_dir)
    random_ft = maskalign_configs.get_config("digits_finetune")
    random_ft.model.pretrained = os.path.join(random_dir, "maskalign_pretrain.npz")
    random_ft_summary = _train(random_ft, os.path.join(runs, "maskalign_digits_random_mask_ft"))

    # The alignment loss on held-out images (fixed masks) at the first eval and at the end, and the untrained model's.
    history = _eval_history(pretrain_dir, "eval/loss")
    results = {
        "teacher_top1_sklearn_test": teacher_accuracy(teacher_dir, "sklearn_digits", "test"),
        "teacher_top1_opencv_test": teacher_accuracy(teacher_dir, "opencv_digits", "test"),
        "pretrain_eval_loss_history": history,
        "pretrain_train_loss_first_last": _first_last(_eval_history(pretrain_dir, "train/loss")),
        "finetune_from_maskalign_top1": ft_summary.get("eval/top1"),
        "finetune_from_scratch_top1": scratch_summary.get("eval/top1"),
        "finetune_from_random_mask_top1": random_ft_summary.get("eval/top1"),
        "pretrain_steps": pre_summary.get("step"),
        "pretrain_wall_s": pre_summary.get("wall_time_s"),
    }
    with open(os.path.join(runs, "maskalign_digits_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = "\n".join([
        "| held-out top-1 on opencv-doc digits (1000 test images) | value |",
        "|---|---|",
        f"| teacher (ViT trained on scikit-learn digits) | {results['teacher_top1_opencv_test']:.4f} |",
        f"| fine-tune, 20 labels/class, from the MaskAlign student | {results['finetune_from_maskalign_top1']:.4f} |",
        f"| fine-tune, 20 labels/class, from random init | {results['finetune_from_scratch_top1']:.4f} |",
        ("| fine-tune, 20 labels/class, from a MaskAlign student pre-trained with random masking | "
         f"{results['finetune_from_random_mask_top1']:.4f} |"),
        "",
        f"teacher top-1 on its own held-out scikit-learn digits: {results['teacher_top1_sklearn_test']:.4f}; "
        f"pre-training train loss {results['pretrain_train_loss_first_last'][0]:.4f} -> "
        f"{results['pretrain_train_loss_first_last'][1]:.4f}; held-out alignment loss by step: "
        + ", ".join(f"{s}: {v:.4f}" for s, v in history),
    ])
    with open(os.path.join(runs, "maskalign_digits_results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return results


def _first_last(history: list[tuple[int, float]]) -> tuple[float, float]:
    return (history[0][1], history[-1][1]) if history else (float("nan"), float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="directory of the four workdirs and the results")
    parser.add_argument("--pretrain_steps", type=int, default=None, help="override the pre-training length")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("zoo").setLevel(logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save / restore at INFO
    run(args.runs, pretrain_steps=args.pretrain_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
