"""Why does SAMWISE's held-out J&F on `vtest_referring` not move? Object scores and un-gated masks of a
`benchmarks/samwise_vtest.py` run, untrained vs trained adapters.

    python benchmarks/samwise_vtest_diag.py --sam2-workdir runs/samwise_vtest_bench/sam2 \
        --samwise-workdir runs/samwise_vtest_bench/samwise [--adapter-dim 16 --image-size 128 --train-limit 102]

At evaluation the port (as the official `SAM2Base._forward_sam_heads`, `if not self.training`) replaces the mask logits
of a frame whose object score is <= 0 by -1024, so a frame with a negative object score gives an empty mask whatever
its mask logits; in training the masks are not gated and no loss reaches the object score (official SAMWISE has no
object-score term, and SAM2, whose head makes the score, is frozen). Per split (held-out, and the first
`--train-limit` train examples) and per adapter state (untrained = the seeded init + MiniLM + stage-1 SAM2; trained =
the latest checkpoint in --samwise-workdir), it reports:
- the fraction of frames with a positive object score, and the mean score;
- J against the referent of the gated masks (what `Trainer.evaluate()` scores) and of the un-gated masks (the same
  forward, the gate off, i.e. the masks the training loss sees; the memory is written from the un-gated masks too,
  as in training), and the predicted foreground fraction of both;
- J of the un-gated masks against the clip's other people.
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from flax import nnx

from benchmarks.common import log


@contextlib.contextmanager
def ungated():
    """`SAMWISE.sam_heads` with the evaluation gate off (its `train` flag only gates the masks)."""
    from models.samwise.model import SAMWISE

    original = SAMWISE.sam_heads

    def heads(self, pix_feat, text_state, high_res, *, train=False, early=False):
        return original(self, pix_feat, text_state, high_res, train=True, early=early)

    SAMWISE.sam_heads = heads
    try:
        yield
    finally:
        SAMWISE.sam_heads = original


def split_stats(trainer, split: str, batch_size: int, limit: int | None) -> dict:
    from zoo.data.refvos_clips import resize_and_pad
    from zoo.metrics import davis

    task = trainer.task
    source = task.data_source(split)
    transform = task.transform()
    model = trainer.eval_model()
    model.eval()
    graphdef, state = nnx.split(model)
    keys = ("frames", "tokens", "token_mask")

    def make_forward():  # a fresh function per jit: the two traces must not share a cache
        def forward(s, b):
            out = task.forward(nnx.merge(graphdef, s), b, train=False)
            return out["masks"] > 0, out["object_score_logits"]
        return forward

    gated_fn = jax.jit(make_forward())
    ungated_fn = jax.jit(make_forward())  # traced inside `ungated()` (its first call is)
    count = len(source) if limit is None else min(limit, len(source))
    examples = [transform(source[i]) for i in range(count)]
    rows = []
    for start in range(0, count, batch_size):
        chunk = examples[start:start + batch_size]
        chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
        batch = {k: np.stack([c[k] for c in chunk]) for k in keys}
        g_masks, scores = (np.asarray(x) for x in gated_fn(state, batch))
        with ungated():
            u_masks, u_scores = (np.asarray(x) for x in ungated_fn(state, batch))
        for j in range(min(batch_size, count - start)):
            i = start + j
            ex = examples[i]
            h, w = int(ex["size"][0]), int(ex["size"][1])
            truth = ex["masks"][:, :h, :w] > 0
            labels = source.blob_labels(i)
            targets = np.stack([np.isin(f, b) for f, b in zip(labels, source.target_blobs(i))])
            others = (labels > 0) & ~targets
            first = source.examples[i][0]
            others = resize_and_pad(source.frames[first:first + len(labels)], others, task.image_size)["masks"]
            others = others[:, :h, :w] > 0
            g, u = g_masks[j][:, :h, :w], u_masks[j][:, :h, :w]
            rows.append({
                "kind": str(source[i]["kind"]) if "kind" in source[i] else "",
                "score": scores[j].tolist(), "score_ungated": u_scores[j].tolist(),
                "J_gated": float(np.mean(np.atleast_1d(davis.region_j(g, truth)))),
                "J_ungated": float(np.mean(np.atleast_1d(davis.region_j(u, truth)))),
                "J_ungated_others": float(np.mean(np.atleast_1d(davis.region_j(u, others)))) if others.any() else None,
                "fg_gated": float(g.mean()), "fg_ungated": float(u.mean()), "fg_truth": float(truth.mean()),
            })
    scores = np.asarray([s for r in rows for s in r["score"]])
    mean = lambda key: float(np.mean([r[key] for r in rows if r[key] is not None]))  # noqa: E731
    return {"examples": len(rows), "frames": int(scores.size), "score_positive": float(np.mean(scores > 0)),
            "score_mean": float(scores.mean()), "score_min": float(scores.min()), "score_max": float(scores.max()),
            "J_gated": mean("J_gated"), "J_ungated": mean("J_ungated"), "J_ungated_others": mean("J_ungated_others"),
            "fg_gated": mean("fg_gated"), "fg_ungated": mean("fg_ungated"), "fg_truth": mean("fg_truth")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam2-workdir", required=True, help='stage 1\'s workdir ("": random SAM2)')
    parser.add_argument("--samwise-workdir", required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--adapter-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--train-limit", type=int, default=102)
    parser.add_argument("--states", default="untrained,trained")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    from benchmarks.samwise_vtest import samwise_config
    from zoo.train.trainer import Trainer

    sam2_dir = str(Path(args.sam2_workdir).resolve()) if args.sam2_workdir else ""  # "": a random SAM2 (smoke test)
    config = samwise_config(sam2_dir, args.image_size, 1, 1e-3, 2)
    config.model.overrides.adapter_dim = args.adapter_dim
    result = {"sam2_workdir": args.sam2_workdir, "samwise_workdir": args.samwise_workdir}
    for which in args.states.split(","):
        # A scratch workdir for the untrained state (nothing to restore); the run's own for the trained one.
        trainer = Trainer(config, "/tmp/samwise_diag_scratch" if which == "untrained" else args.samwise_workdir)
        if which == "trained":
            iterator = trainer.task.train_iterator(seed=0, process_index=0, process_count=1)
            if not trainer._restore(trainer._manager(), iterator):
                raise SystemExit(f"no checkpoint in {args.samwise_workdir}")
        result[which] = {"step": trainer.step}
        for split, limit in (("eval", None), ("train", args.train_limit)):
            result[which][split] = split_stats(trainer, split, args.batch_size, limit)
            log(f"{which} {split}: {result[which][split]}")
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
