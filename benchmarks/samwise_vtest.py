"""SAMWISE on the embedded referring set (`vtest_referring`), starting from a SAM2 that can segment people.

    python benchmarks/samwise_vtest.py [--workdir runs/samwise_vtest_bench] [--image-size 128] \
        [--sam2-steps 160] [--steps 100] [--lr 1e-3]

No SAM2 weights exist offline, so the run has two stages:
1. **SAM2 pre-fine-tune.** `configs/sam2.py:vtest_video` (task `video_segmentation`: clips of 4 frames following one
   person of vtest.avi, frame 0 prompted by a click, a box or its mask, frames 1-3 tracked through memory) at the
   SAMWISE run's image size, from random init. The image encoder is trained too (`model.freeze_image_encoder`
   False, nothing frozen): a random, frozen Hiera carries no segmentation ability, and nothing else can give it one
   here. Scored by that task's own eval (mean IoU of the tracked frames on the held-out part of its frames).
   Its frames are the first 300 of the video's 795; the SAMWISE held-out clips come from the last 20 %.
2. **SAMWISE before / after.** `configs/samwise.py:vtest_sam2init` with `model.sam2_init` = stage 1's workdir
   (SAM2 frozen; MiniLM with its real weights, frozen; adapters, CME and `project_text` trained). Held-out J / F /
   J&F from `Trainer.evaluate()` on the untrained adapters, then after the training run, plus the first / last
   train losses. Two checks of whether the masks follow the *referred* person, on the same held-out examples:
   - `J_others`: J of the predicted masks against the union of the clip's other blobs (the people the expression
     does not refer to), next to J against the referent;
   - the text swap: each example whose clip has another expression with a different referent is run again with
     that expression; J against the original referent with the right text vs with the swapped text.

Both stages resume / skip when their workdir holds a finished run. Writes benchmarks/results/samwise_vtest.md and
.json (the --out folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from flax import nnx

from benchmarks.common import RESULTS_DIR, busy_processes, footer_lines, log, train_unless_done, write_results


class _Logger:
    """`train_unless_done` wants a logging.Logger-like `info`."""

    @staticmethod
    def info(message, *args):
        log(message % args if args else message)


def sam2_config(image_size: int, steps: int, lr: float):
    """configs/sam2.py:vtest_video at `image_size`, `steps` steps, the image encoder trained too (module docstring)."""
    from configs.sam2 import get_config

    config = get_config("vtest_video")
    config.model.overrides = {"image_size": image_size}
    config.data.image_size = image_size
    config.model.freeze_image_encoder = False
    config.optimizer.frozen = ()
    config.num_train_steps = steps
    config.optimizer.lr = lr
    config.optimizer.warmup_steps = min(10, steps // 4)
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 0
    return config


def samwise_config(sam2_dir: str, image_size: int, steps: int, lr: float, batch_size: int):
    """configs/samwise.py:vtest_sam2init with SAM2 from `sam2_dir`."""
    from configs.samwise import get_config

    config = get_config("vtest_sam2init")
    config.model.sam2_init = sam2_dir
    config.data.image_size = image_size
    for split in ("train", "eval"):
        config.data[split].kwargs.size = image_size
    config.num_train_steps = steps
    config.optimizer.lr = lr
    config.batch_size = batch_size
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 0
    return config


def train_losses(workdir: str, key: str = "train/loss") -> list[float]:
    """The per-step values of `key` in the run's metrics.jsonl (log_every 1), in step order."""
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as handle:
        for line in handle:
            row = json.loads(line)
            if key in row:
                rows[int(row["step"])] = float(row[key])
    return [rows[s] for s in sorted(rows)]


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def referent_checks(trainer, batch_size: int, limit: int | None = None) -> dict:
    """Per held-out example: J against the referent and against the other blobs of the clip; and the text swap
    (module docstring). Runs the model in eval mode through one jitted predict at a fixed batch size."""
    from zoo.data.refvos_clips import resize_and_pad
    from zoo.metrics import davis

    task = trainer.task
    source = task.data_source("eval")
    transform = task.transform()
    model = trainer.eval_model()
    model.eval()
    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda s, b: task.predict(nnx.merge(graphdef, s), b))
    keys = ("frames", "tokens", "token_mask")

    def run(examples: list[dict]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = [transform(e) for e in examples[start:start + batch_size]]
            chunk += [chunk[-1]] * (batch_size - len(chunk))  # pad to the compiled batch size
            batch = {k: np.stack([c[k] for c in chunk]) for k in keys}
            masks = np.asarray(predict(state, batch))
            out += [masks[i] for i in range(min(batch_size, len(examples) - start))]
        return out

    def j_of(pred: np.ndarray, truth: np.ndarray, size) -> float:
        h, w = int(size[0]), int(size[1])
        return float(np.mean(np.atleast_1d(davis.region_j(pred[:, :h, :w], truth[:, :h, :w] > 0))))

    count = len(source) if limit is None else min(limit, len(source))
    examples = [source[i] for i in range(count)]
    preds = run(examples)
    rows = []
    for i, (example, pred) in enumerate(zip(examples, preds)):
        labels = source.blob_labels(i)
        targets = np.stack([np.isin(frame, blobs) for frame, blobs in zip(labels, source.target_blobs(i))])
        others = (labels > 0) & ~targets
        start = source.examples[i][0]
        others = resize_and_pad(source.frames[start:start + len(labels)], others, task.image_size)["masks"]
        rows.append({"kind": str(example["kind"]), "J": j_of(pred, example["masks"], example["size"]),
                     "J_others": j_of(pred, others, example["size"]) if others.any() else None,
                     "fg_fraction": float(pred[:, :int(example["size"][0]), :int(example["size"][1])].mean())})
    # The text swap: another expression of the same clip with a different referent.
    by_clip: dict[int, list[int]] = {}
    for i, (start, *_rest) in enumerate(source.examples):
        by_clip.setdefault(start, []).append(i)
    swaps = []
    for i, (start, _, _, _, targets) in enumerate(source.examples[:count]):
        other = [k for k in by_clip[start] if k < count and set(source.examples[k][4]) != set(targets)]
        if other:
            swaps.append((i, other[0]))
    swapped = run([dict(examples[i], expression=examples[k]["expression"]) for i, k in swaps])
    swap_rows = [{"J_right_text": rows[i]["J"], "J_swapped_text": j_of(pred, examples[i]["masks"], examples[i]["size"])}
                 for (i, _), pred in zip(swaps, swapped)]
    kinds = sorted({r["kind"] for r in rows})
    return {
        "examples": len(rows),
        "J": _mean(r["J"] for r in rows),
        "J_others": _mean(r["J_others"] for r in rows if r["J_others"] is not None),
        "others_examples": sum(r["J_others"] is not None for r in rows),
        "fg_fraction": _mean(r["fg_fraction"] for r in rows),
        "J_by_kind": {k: _mean(r["J"] for r in rows if r["kind"] == k) for k in kinds},
        "count_by_kind": {k: sum(r["kind"] == k for r in rows) for k in kinds},
        "swap_examples": len(swap_rows),
        "swap_J_right_text": _mean(r["J_right_text"] for r in swap_rows),
        "swap_J_swapped_text": _mean(r["J_swapped_text"] for r in swap_rows),
    }


def empty_mask_scores(task) -> dict:
    """Held-out J / F / J&F of all-empty masks (DAVIS scores an empty prediction of an empty truth as 1: the small,
    far people can vanish when a clip is resized to the model's size), the floor the model's numbers sit on."""
    from models.samwise.tasks import clip_scores

    source = task.data_source("eval")
    examples = [source[i] for i in range(len(source))]
    scores = np.concatenate([clip_scores(np.zeros_like(e["masks"])[None], e["masks"][None], e["size"][None])
                             for e in examples])
    j, f = float(scores[:, 0].mean()), float(scores[:, 1].mean())
    empty = float(np.mean([not m.any() for e in examples for m in e["masks"]]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "empty_truth_frames": empty}


def _fmt(value, spec=".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _first_last(values: list[float], k: int = 5) -> tuple[float | None, float | None]:
    return (_mean(values[:k]), _mean(values[-k:])) if values else (None, None)


def table(record: dict, argv: list[str]) -> str:
    s1, s2 = record["sam2"], record["samwise"]
    before, after = s2["before"], s2["after"]
    cb, ca = s2["checks_before"], s2["checks_after"]
    lines = [
        "# SAMWISE on the embedded referring set (`vtest_referring`), CPU, SAM2 pre-fine-tuned on vtest",
        "",
        (f"Produced by `benchmarks/samwise_vtest.py` on {record['machine']}; load average (1 min) "
        f"{record['load_start'][0]:.1f} at the start, {record['load_end'][0]:.1f} at the end. "
        f"jax {record['jax']}."),
        "",
        f"## Stage 1: SAM2 tiny on vtest person clips ({s1['image_size']} px)",
        "",
        (f"`configs/sam2.py:vtest_video` at image_size {s1['image_size']}, {s1['steps']} steps, batch 4 clips of 4 "
        f"frames, AdamW lr {s1['lr']:g} (warmup-cosine), from random init, image encoder trained too. "
        f"Wall time {_fmt(s1['wall_s'], '.0f')} s."),
        "",
        "| SAM2 | train loss, mean of first 5 / last 5 steps | held-out IoU of the tracked frames (frames 1-3) |",
        "|---|---|---|",
        (f"| vtest_video, {s1['steps']} steps | {_fmt(s1['loss_first'], '.2f')} / {_fmt(s1['loss_last'], '.2f')} | "
        f"{_fmt(s1['eval_miou_tracked'], '.3f')} |"),
        "",
        f"## Stage 2: SAMWISE before / after ({s2['image_size']} px, clips of 2)",
        "",
        (f"`configs/samwise.py:vtest_sam2init`: `samwise_sam2_tiny` with SAM2 from stage 1 (frozen), all-MiniLM-L6-v2 "
        f"(real weights, frozen), adapters of width {s2['adapter_dim']}, CME window 0; batch {s2['batch_size']}, AdamW lr "
        f"{s2['lr']:g} constant (the official lr is 1e-5 over 6 epochs; this is a run of {s2['steps']} steps), "
        f"clip 1. {s2['train_examples']} train and {s2['eval_examples']} held-out (clip, expression) examples, "
        f"split by time. Wall time {_fmt(s2['wall_s'], '.0f')} s (build, compiles, both evals)."),
        "",
        "| adapters | train loss, mean of first 5 / last 5 steps | held-out J | F | J&F |",
        "|---|---|---|---|---|",
        (f"| all-empty masks (no model) | – | {s2['empty_masks']['J']:.4f} | {s2['empty_masks']['F']:.4f} | "
         f"{s2['empty_masks']['J&F']:.4f} |"),
        (f"| untrained (`Trainer.evaluate()` before training) | – | {before['J']:.4f} | {before['F']:.4f} | "
        f"{before['J&F']:.4f} |"),
        (f"| after {s2['steps']} steps | {_fmt(s2['loss_first'], '.3f')} / {_fmt(s2['loss_last'], '.3f')} | "
        f"{after['J']:.4f} | {after['F']:.4f} | {after['J&F']:.4f} |"),
        "",
        "Loss terms, mean of the first 5 / last 5 steps: "
        + ", ".join(f"{k} {_fmt(v[0], '.3f')} / {_fmt(v[1], '.3f')}" for k, v in s2["terms_first_last"].items())
        + ".",
        "",
        "### Does the mask follow the referred person?",
        "",
        ("| adapters | J vs the referent | J vs the clip's other people | predicted foreground fraction | "
        "text swap: J vs the referent, right text / swapped text |"),
        "|---|---|---|---|---|",
    ]
    for name, c in (("untrained", cb), (f"after {s2['steps']} steps", ca)):
        lines.append(f"| {name} | {_fmt(c['J'])} | {_fmt(c['J_others'])} ({c['others_examples']} examples) | "
                     f"{_fmt(c['fg_fraction'])} | {_fmt(c['swap_J_right_text'])} / {_fmt(c['swap_J_swapped_text'])} "
                     f"({c['swap_examples']} examples) |")
    lines += ["", "J by expression kind after training: "
              + ", ".join(f"{k} {_fmt(v, '.3f')} (n={ca['count_by_kind'][k]})" for k, v in ca["J_by_kind"].items())
              + "."]
    gain = after["J&F"] - before["J&F"]
    if s2["empty_masks"]["empty_truth_frames"] > 0:
        lines += ["", (f"{100 * s2['empty_masks']['empty_truth_frames']:.1f} % of the held-out frames have an empty "
                       "referent mask once resized, where DAVIS scores an empty prediction J = F = 1: the all-empty "
                       "row is the floor.")]
    lines += ["", "**Reading (computed from the numbers above).** "
              f"Held-out J&F {'rises' if gain > 0 else 'does not rise'} over the untrained adapters "
              f"({before['J&F']:.4f} -> {after['J&F']:.4f}, {gain:+.4f}); the train loss goes "
              f"{_fmt(s2['loss_first'], '.3f')} -> {_fmt(s2['loss_last'], '.3f')}. "
              + (f"After training the masks overlap the referred person "
                 f"{'more' if (ca['J'] or 0) > (ca['J_others'] or 0) else 'less'} than the clip's other people "
                 f"(J {_fmt(ca['J'])} vs {_fmt(ca['J_others'])}; all-empty masks score J "
                 f"{s2['empty_masks']['J']:.4f} against the referent), and swapping in another expression of the same clip "
                 f"{'lowers' if (ca['swap_J_swapped_text'] or 0) < (ca['swap_J_right_text'] or 0) else 'does not lower'}"
                 f" J against the original referent ({_fmt(ca['swap_J_right_text'])} -> "
                 f"{_fmt(ca['swap_J_swapped_text'])})" if ca["swap_examples"] else "")
              + ".",
              "",
              ("Earlier result, for comparison: with a **random** frozen SAM2 (no `model.sam2_init`; `vtest_fast` at "
              "64 px, batch 2, lr 1e-3) held-out J&F went 0.0106 (untrained) -> 0.0364 after 40 steps and 0.0128 "
              "after 150: near zero, since a random SAM2 cannot segment anything.")]
    lines += footer_lines(record.get("note", ""), record["busy_start"], record["busy_end"], "samwise_vtest.py", argv)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/samwise_vtest_bench")
    parser.add_argument("--sam2-workdir", default="", help="stage 1's workdir (default <workdir>/sam2)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--sam2-steps", type=int, default=160)
    parser.add_argument("--sam2-lr", type=float, default=5e-4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--adapter-dim", type=int, default=16, help="CMT adapter width (official 256)")
    parser.add_argument("--stem", default="samwise_vtest", help="results file name (<out>/<stem>.md / .json)")
    parser.add_argument("--eval-batch-size", type=int, default=6)
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    load_start, busy_start = os.getloadavg(), busy_processes()
    log(f"load average (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    sam2_dir = os.path.abspath(args.sam2_workdir or os.path.join(args.workdir, "sam2"))
    samwise_dir = os.path.abspath(os.path.join(args.workdir, "samwise"))

    # ---- stage 1: SAM2
    start = time.perf_counter()
    summary = train_unless_done(sam2_config(args.image_size, args.sam2_steps, args.sam2_lr), sam2_dir, _Logger)
    sam2_losses = train_losses(sam2_dir)
    first, last = _first_last(sam2_losses)
    sam2 = {"image_size": args.image_size, "steps": int(summary["step"]), "lr": args.sam2_lr, "workdir": sam2_dir,
            "eval_miou_tracked": summary.get("eval/miou_tracked"), "eval_loss": summary.get("eval/loss"),
            "loss_first": first, "loss_last": last,
            "wall_s": summary.get("wall_time_s") if summary.get("wall_time_s") else time.perf_counter() - start}
    log(f"SAM2: held-out tracked IoU {sam2['eval_miou_tracked']}, loss {first} -> {last}")

    # ---- stage 2: SAMWISE
    from zoo.train.trainer import Trainer

    start = time.perf_counter()
    config = samwise_config(sam2_dir, args.image_size, args.steps, args.lr, args.batch_size)
    config.data.eval_batch_size = args.eval_batch_size
    config.model.overrides.adapter_dim = args.adapter_dim
    trainer = Trainer(config, samwise_dir)
    empty = empty_mask_scores(trainer.task)
    log(f"all-empty masks: {empty}")
    before = trainer.evaluate()
    log(f"SAMWISE untrained adapters: {before}")
    checks_before = referent_checks(trainer, args.eval_batch_size)
    log(f"checks before: {checks_before}")
    summary = trainer.run()
    after = {k[len("eval/"):]: v for k, v in summary.items() if k.startswith("eval/")} or trainer.evaluate()
    log(f"SAMWISE after {trainer.step} steps: {after}")
    checks_after = referent_checks(trainer, args.eval_batch_size)
    log(f"checks after: {checks_after}")
    losses = train_losses(samwise_dir)
    first, last = _first_last(losses)
    terms = {k: _first_last(train_losses(samwise_dir, f"train/{k}"))
             for k in ("loss_mask", "loss_dice", "CME_loss", "clip_iou")}
    samwise = {"image_size": args.image_size, "steps": trainer.step, "lr": args.lr, "batch_size": args.batch_size,
               "workdir": samwise_dir, "adapter_dim": args.adapter_dim, "empty_masks": empty, "before": before, "after": after, "loss_first": first, "loss_last": last,
               "losses": losses, "terms_first_last": terms, "checks_before": checks_before,
               "checks_after": checks_after, "train_examples": len(trainer.task.data_source("train")),
               "eval_examples": checks_after["examples"], "params": trainer.param_count,
               "wall_s": time.perf_counter() - start}
    record = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "jax": jax.__version__,
              "load_start": load_start, "load_end": os.getloadavg(), "busy_start": busy_start,
              "busy_end": busy_processes(), "sam2": sam2, "samwise": samwise, "note": args.note}
    write_results(args.out, args.stem, record, table(record, argv))
    return record


if __name__ == "__main__":
    main()
