"""Does Wild-GS use its appearance inputs? Train briefly on the embedded duck, then probe the trained model.

    python benchmarks/wildgs_probe.py --steps 300 --resolution 64 [--plain] [--set wildgs.lambda_mask_end=0.4 ...]

Prints the held-out right-half metrics (the in-the-wild protocol) and, for Wild-GS:
- render sensitivity: one held-out camera rendered with five different references (std across references of the
  pixels; 0 = the appearance inputs are ignored);
- the spread across references of the global embedding (per component) and of the local (triplane) embeddings;
- the mask level per reference and the fraction of Gaussians inside the triplane AABB;
- triplane alignment: for the Gaussians visible in a reference view, the colour maps sampled at their centres vs the
  reference pixel they project to (correlation per channel on covered cells; high = the planes hold the right
  colours at the right places).
`--plain` trains plain 3DGS on the same schedule instead (right-half metrics only). `--set key=value` overrides a
config field (value a Python literal). These are diagnostics for models/wildgs/README.md ("Measured").
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from zoo.train.trainer import Trainer


def _config(args):
    from benchmarks.wildgs_duck import _configs

    plain, wild = _configs(args.steps)
    config = plain if args.plain else wild
    config.data.train.kwargs = {"resolution": args.resolution}
    for item in args.set:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = ast.literal_eval(value)
    for item in args.group_lr:
        from configs.wildgs import set_group_lr

        pattern, _, value = item.rpartition("=")
        set_group_lr(config, pattern, float(value))
    return config


def _alignment(model, batch, width: int, height: int) -> list[str]:
    from models.wildgs.triplane import PLANE_AXES, normalise_points, sample_plane

    appearance, triplane = model.appearance, model.appearance.triplane
    image, viewmat, K = batch["image"][0], batch["viewmat"][0], batch["K"][0]
    depth = model.reference_depth(viewmat, K, width, height)
    maps, coverage = triplane.colour_maps(
        image, depth, K, viewmat, jnp.ones((height, width), bool), appearance.aabb[...]
    )
    means = np.asarray(model.means())
    camera = means @ np.asarray(viewmat[:3, :3]).T + np.asarray(viewmat[:3, 3])
    uv = camera @ np.asarray(K).T
    z = np.maximum(uv[:, 2], 1e-9)
    iu, iv = np.floor(uv[:, 0] / z).astype(int), np.floor(uv[:, 1] / z).astype(int)
    ok = np.asarray(model.active[...]) & (camera[:, 2] > 0) & (iu >= 0) & (iu < width) & (iv >= 0) & (iv < height)
    rendered = np.asarray(depth)
    visible = ok.copy()
    visible[ok] = np.abs(rendered[iv[ok], iu[ok]] - camera[ok, 2]) < 0.05 * camera[ok, 2]
    pixels = np.asarray(image)[iv[visible], iu[visible]]
    normalised, _ = normalise_points(jnp.asarray(means), appearance.aabb[...])
    lines = [f"triplane alignment: {int(visible.sum())} Gaussians visible in the reference"]
    for k, (a, b, _) in enumerate(PLANE_AXES):
        for r, name in ((0, "forward"), (1, "reverse")):
            sampled = np.asarray(sample_plane(maps[2 * k + r], normalised[:, a], normalised[:, b]))[visible]
            cover = np.asarray(sample_plane(coverage[2 * k + r][..., None], normalised[:, a], normalised[:, b]))
            good = cover[visible, 0] > 0.99
            corr = [float(np.corrcoef(sampled[good, c], pixels[good, c])[0, 1]) if good.sum() > 2 else float("nan")
                    for c in range(3)]  # fmt: skip
            lines.append(f"  plane {k} {name}: covered {good.mean():.2f}, corr RGB {np.round(corr, 3).tolist()}")
    return lines


def _batches(task, source):
    """Every view of `source` as a one-view batch with the task's eval keys (occluder masks where the data has them)."""
    from zoo import data as data_lib

    pipeline = data_lib.make_pipeline(source, batch_size=1, train=False, transform=task.view_transform(False),
                                      process_index=0, process_count=1)  # fmt: skip
    keys = task.batch_keys
    for b in pipeline:
        if float(b[data_lib.MASK_KEY][0]) > 0:
            yield {k: jnp.asarray(b[k]) for k in keys if k in b}


def _scores(task, model, source, *, wild: bool) -> dict[str, float]:
    """Mean PSNR over the views of `source`, each rendered with its own whole image as the reference (Wild-GS) or as
    is (plain): on the whole image, on its right half, and on its occluder-free pixels (where the data has masks)."""
    from models.gs3d import losses

    width, height = task.canvas
    half = width // 2
    rows = []
    for batch in _batches(task, source):
        image, valid = batch["image"][0], batch["valid"][0]
        if wild:
            viewmat, K = batch["viewmat"][0], batch["K"][0]
            model.set_reference(image, viewmat, K, depth=model.reference_depth(viewmat, K, width, height))
        predicted = jnp.clip(task.render(model, batch).image[0], 0.0, 1.0)
        clean = valid * (1.0 - (batch["occluder_mask"][0] > 0.5)) if "occluder_mask" in batch else valid
        rows.append([float(losses.psnr(predicted, image, valid)),
                     float(losses.psnr(predicted[:, half:], image[:, half:], valid[:, half:])),
                     float(losses.psnr(predicted, image, clean))])  # fmt: skip
    whole, right, unoccluded = np.mean(rows, axis=0)
    return {"whole": round(whole, 3), "right_half": round(right, 3), "occluder_free": round(unoccluded, 3)}


def _own_reference_scores(trainer, *, wild: bool) -> None:
    task, model = trainer.task, trainer.eval_model()
    print("own-image reference, test views:", _scores(task, model, task.eval_source, wild=wild))
    print("own-image reference, train views:", _scores(task, model, task.train_source, wild=wild))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--plain", action="store_true", help="train plain 3DGS instead of Wild-GS")
    parser.add_argument("--set", action="append", default=[], help="config override key=python_literal")
    parser.add_argument(
        "--group-lr",
        action="append",
        default=[],
        help="optimizer group lr PATTERN=VALUE (PATTERN as in configs/wildgs.py, e.g. features=2.5e-4)",
    )
    parser.add_argument("--workdir", default="/tmp/wildgs_probe")
    args = parser.parse_args()
    config = _config(args)
    start = time.perf_counter()
    trainer = Trainer(config, args.workdir, devices=jax.devices()[:1])
    summary = trainer.run()
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s")
    if args.plain:
        from benchmarks.wildgs_duck import _right_half_eval

        print("right half", {k: round(v, 4) for k, v in _right_half_eval(trainer).items()})
        _own_reference_scores(trainer, wild=False)
        return
    print("right half", {k.removeprefix("eval/"): round(float(v), 4) for k, v in summary.items() if "eval/" in k})
    _own_reference_scores(trainer, wild=True)
    task, model = trainer.task, trainer.eval_model()
    width, height = task.canvas
    batches = [{k: jnp.asarray(v) for k, v in b.items()} for b in task.eval_batches(process_index=0, process_count=1)
               if float(b["mask"][0]) > 0]  # fmt: skip
    target = batches[0]
    renders, globals_, locals_ = [], [], []
    active = np.asarray(model.active[...])
    for ref in batches[:5]:
        image, viewmat, K = ref["image"][0], ref["viewmat"][0], ref["K"][0]
        depth = model.reference_depth(viewmat, K, width, height)
        out = model.set_reference(image, viewmat, K, depth=depth)
        globals_.append(np.asarray(out.global_embedding))
        locals_.append(np.asarray(out.local_embedding)[active])
        renders.append(np.asarray(task.render(model, target).image[0]))
        print(f"reference mean RGB {np.asarray(image).reshape(-1, 3).mean(0).round(3)}, render mean RGB "
              f"{renders[-1].reshape(-1, 3).mean(0).round(3)}, mask mean {float(out.mask.mean()):.3f}, inside AABB "
              f"{float(np.asarray(out.inside)[active].mean()):.3f}")  # fmt: skip
    print(f"render std across references: {float(np.stack(renders).std(0).mean()):.5f}")
    g = np.stack(globals_)
    print(f"global embedding: std across references {g.std(0).round(3).tolist()}, mean |value| {np.abs(g).mean():.3f}")
    lo = np.stack(locals_)
    print(f"local embeddings: std across references {lo.std(0).mean():.5f}, mean |value| {np.abs(lo).mean():.4f}")
    print("\n".join(_alignment(model, batches[1], width, height)))


if __name__ == "__main__":
    main()
