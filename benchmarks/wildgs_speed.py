"""Speed of plain 3DGS and Wild-GS on the embedded in-the-wild duck (`wild_duck`, 128 px): training iterations/s
through the shared trainer's jitted step (compile excluded), and render FPS of a trained-size pool with cached SH.

    python benchmarks/wildgs_speed.py [--steps 8] [--renders 20] [--gaussians 10240] [--pool-workdir runs/gs3d_duck]
        [--no-pallas] [--out benchmarks/results/wildgs_speed.md]

- Training: `Trainer(configs/gs3d.py:graphdeco on wild_duck)` and `Trainer(configs/wildgs.py:wild_duck)`, the
  trainer's own `_train_step` on the task's batches, 2 warm-up steps (the first compiles), then `--steps` timed steps
  (densification hooks not run: they fire every 50 steps and are not part of the step). The pool is the task's
  initial one (from the scene's SfM points).
- Rendering: a pool of `--gaussians` Gaussians (the SfM points, each copied with a jitter of its neighbour distance,
  opacity 0.5, random SH; or the trained pool of `--pool-workdir`) rendered at the training camera's 128x128 by
  `GaussianSplats.render` and by `WildGS.render` after `set_reference` (cached SH: the same rasterization), plus
  the cost of one `set_reference` (parsing UNet + triplane + fusion MLP). XLA rasterizer (`impl="xla"`); the Pallas
  rasterizer runs on CPU only in interpret mode (`impl="pallas"`), timed once to show it is not a speed.
- gsplat: whether it imports and rasterizes here (it needs CUDA).
Writes the markdown table to --out and the raw numbers beside it (.json); records the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import RESULTS_DIR, cpu_model, log, log_load_start


def _configs():
    from configs.gs3d import get_config as gs3d_config
    from configs.wildgs import get_config as wildgs_config

    wild = wildgs_config("wild_duck")
    plain = gs3d_config("graphdeco")
    plain.data.train.name = "wild_duck"
    plain.data.eval.name = ""
    plain.gaussians = wild.gaussians  # the same pool settings, background and schedule
    for config in (wild, plain):
        config.num_train_steps = 1000
        config.log_every = 1000
        config.eval_every = 0
        config.checkpoint_every = 0
    return plain, wild


def time_training(config, workdir: str, steps: int) -> dict:
    """Iterations/s of the trainer's jitted step (after 2 warm-up steps; the first one's time is the compile)."""
    from zoo.train.trainer import Trainer, _global_batch

    trainer = Trainer(config, workdir, devices=jax.devices()[:1])
    iterator = trainer.task.train_iterator(seed=0, process_index=0, process_count=1)

    def step():
        batch = _global_batch(next(iterator), trainer.batch_sharding)
        trainer.state, trainer.ema, metrics = trainer._train_step(trainer.state, trainer.ema, batch)
        jax.block_until_ready(metrics)
        return metrics

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        metrics = step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    model = trainer.eval_model()
    return {
        "first_step_s": first, "median_step_s": median, "it_per_s": 1.0 / median, "times_s": times,
        "capacity": int(model.capacity), "active": int(model.num_active()), "params": int(trainer.param_count),
        "loss": float(metrics["loss"]), "trainer": trainer,
    }  # fmt: skip


def render_pool(task, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` Gaussians from the scene's SfM points: each point copied with a jitter of its 3-NN distance, scales from
    the copies' own neighbours, opacity 0.5, SH rest N(0, 0.05) (a trained pool's look, without training)."""
    from models.gs3d import pool as pool_lib

    rng = np.random.default_rng(seed)
    xyz, rgb = np.asarray(task.scene.points_xyz, np.float32), np.asarray(task.scene.points_rgb)
    pick = rng.integers(0, len(xyz), count)
    spread = np.sqrt(pool_lib.mean_sq_dist_knn(xyz))[pick, None]
    points = xyz[pick] + rng.normal(size=(count, 3)).astype(np.float32) * spread
    pool = pool_lib.init_from_points(points, rgb[pick], count, position_scale=task.extent, initial_opacity=0.5)
    pool["sh_rest"][:] = 0.05 * rng.normal(size=pool["sh_rest"].shape)
    return pool


def time_renders(model, viewmat, K, width, height, background, renders: int) -> dict:
    """Median seconds (and FPS) of a jitted `model.render` of one camera, after one compiling call."""
    graphdef, state = nnx.split(model)
    bg = jnp.asarray(background, jnp.float32)

    @jax.jit
    def render(state, viewmat):
        out = nnx.merge(graphdef, state).render(viewmat, K, width, height, background=bg)
        return out.image, out.n_intersections[0], out.overflow[0]

    start = time.perf_counter()
    image, pairs, overflow = jax.block_until_ready(render(state, viewmat))
    first = time.perf_counter() - start
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        jax.block_until_ready(render(state, viewmat))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    extra = {"pairs": int(pairs), "overflow": bool(overflow), "image": np.asarray(image[0])}
    return {"first_call_s": first, "median_s": median, "fps": 1.0 / median, "times_s": times, **extra}


def gsplat_status() -> dict:
    """Whether gsplat imports and rasterizes one Gaussian on this machine; the error if not."""
    try:
        import gsplat
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure is the answer
        return {"importable": False, "error": f"{type(err).__name__}: {err}"}
    info = {"importable": True, "version": getattr(gsplat, "__version__", "?"), "torch": torch.__version__,
            "cuda_available": bool(torch.cuda.is_available())}  # fmt: skip
    try:
        means = torch.zeros((1, 3))
        means[0, 2] = 3.0
        quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        scales, opacities, colors = torch.full((1, 3), 0.1), torch.ones(1), torch.ones((1, 3))
        viewmats, Ks = torch.eye(4)[None], torch.tensor([[[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]])
        gsplat.rasterization(means, quats, scales, opacities, colors, viewmats, Ks, 32, 32)
        info["cpu_rasterization"] = "ran"
    except Exception as err:  # noqa: BLE001 - the failure is what is reported
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        where = next((f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}" for f in frames
                      if "gsplat" in f.filename and "_backend" in f.filename), "")  # fmt: skip
        message = (str(err).strip().splitlines() or [""])[-1][:300]
        info["cpu_rasterization"] = f"{type(err).__name__}: {message}" + (f" (raised while {where} JIT-builds "
                                    "gsplat's CUDA extension)" if where else "")  # fmt: skip
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    parser.add_argument("--renders", type=int, default=20, help="timed renders per case")
    parser.add_argument("--gaussians", type=int, default=10240, help="size of the render pool")
    parser.add_argument("--pool-workdir", default="", help="render a trained gs3d workdir's pool instead")
    parser.add_argument("--no-pallas", action="store_true", help="skip the one Pallas interpret-mode render")
    parser.add_argument("--workdir", default="/tmp/wildgs_speed")
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "wildgs_speed.md"))
    args = parser.parse_args()
    load_start, busy_start = log_load_start()
    results: dict = {
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, jax {jax.__version__} "
                   f"{jax.default_backend()}",
        "load_start": load_start, "busy_start": busy_start, "steps": args.steps, "renders": args.renders,
    }  # fmt: skip
    plain, wild = _configs()
    training = {}
    for name, config in (("gs3d", plain), ("wildgs", wild)):
        log(f"training step: {name}")
        entry = time_training(config, os.path.join(args.workdir, name), args.steps)
        trainer = entry.pop("trainer")
        training[name] = entry
        log(f"{name}: {entry['it_per_s']:.2f} it/s (median {entry['median_step_s']:.3f} s, first step "
            f"{entry['first_step_s']:.1f} s, {entry['active']} active of {entry['capacity']})")  # fmt: skip
    results["training"] = training

    import zoo
    from models.gs3d import pool as pool_lib
    from models.gs3d.model import GaussianSplats
    from models.gs3d.render import viewmat_of
    from models.wildgs.export import set_reference

    task = trainer.task  # the Wild-GS run's: its scene, cameras, background and (briefly trained) appearance nets

    view = task.train_source.views[0]
    width, height = int(view.width), int(view.height)
    K, viewmat = jnp.asarray(view.K, jnp.float32), jnp.asarray(viewmat_of(view))
    if args.pool_workdir:
        trained = zoo.create_model("gs3d", pretrained=args.pool_workdir)
        pool = {k: np.asarray(v) for k, v in trained.pool().items()}
        pool = {k: v[pool["active"]] for k, v in pool.items()}
        position_scale, source = float(trained.position_scale.value), f"trained pool of {args.pool_workdir}"
    else:
        pool, position_scale = render_pool(task, args.gaussians), task.extent
        source = "SfM points copied with jitter (opacity 0.5, random SH)"
    count = int(np.sum(pool["active"]))
    log(f"render pool: {count} Gaussians ({source}) at {width}x{height}")
    # The Wild-GS trainer's model (10 steps in: its appearance nets), grown to hold the render pool; every renderer
    # gets the same padded pool (inactive slots still cost their projection), so the numbers compare.
    # Its state is laid out on the trainer's mesh; a plain single-device copy renders like any model outside a run.
    graphdef, state = nnx.split(trainer.eval_model())
    wild_model = nnx.merge(graphdef, jax.device_put(jax.device_get(state), jax.devices()[0]))
    capacity = wild_model.capacity
    while capacity < len(pool["active"]):
        capacity *= 2
    wild_model.grow(capacity)
    padded = pool_lib.empty_pool(capacity, sh_degree=3)
    for key, value in pool.items():
        padded[key][: len(value)] = value
    wild_model.load_pool(padded, position_scale=position_scale)
    renders = {}
    plain_model = GaussianSplats(capacity, sh_degree=3, sh_degree_interval=0, impl="xla")
    plain_model.load_pool(padded, position_scale=position_scale)
    renders["gs3d_xla"] = time_renders(plain_model, viewmat, K, width, height, task.background, args.renders)
    log(f"gs3d XLA render: {renders['gs3d_xla']['fps']:.1f} FPS")
    wild_model.refresh_aabb()
    image = jnp.asarray(task.train_source[0]["image"], jnp.float32) / 255.0
    start = time.perf_counter()
    jax.block_until_ready(set_reference(wild_model, image, viewmat, K).mask)
    reference_first = time.perf_counter() - start
    reference_times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(set_reference(wild_model, image, viewmat, K).mask)
        reference_times.append(time.perf_counter() - start)
    results["set_reference"] = {"first_call_s": reference_first, "median_s": statistics.median(reference_times),
                                "times_s": reference_times}  # fmt: skip
    renders["wildgs_xla"] = time_renders(wild_model, viewmat, K, width, height, task.background, args.renders)
    log(f"wildgs XLA render (cached SH): {renders['wildgs_xla']['fps']:.1f} FPS; set_reference "
        f"{results['set_reference']['median_s']:.3f} s")  # fmt: skip
    if not args.no_pallas:
        log("one Pallas render in interpret mode (CPU)")
        pallas_model = GaussianSplats(capacity, sh_degree=3, sh_degree_interval=0, impl="pallas")
        pallas_model.load_pool(padded, position_scale=position_scale)
        renders["gs3d_pallas_interpret"] = time_renders(pallas_model, viewmat, K, width, height, task.background, 3)
        difference = np.abs(renders["gs3d_pallas_interpret"]["image"] - renders["gs3d_xla"]["image"]).max()
        results["pallas_vs_xla_max_abs_diff"] = float(difference)
        log(f"Pallas interpret: {renders['gs3d_pallas_interpret']['median_s']:.1f} s per render")
    for entry in renders.values():
        entry.pop("image")
    results["render"] = renders
    results["intersection_capacity"] = int(plain_model.intersection_capacity or 16 * plain_model.capacity)
    results["render_pool"] = {"gaussians": count, "capacity": capacity, "source": source, "width": width,
                              "height": height}  # fmt: skip
    results["gsplat"] = gsplat_status()
    log(f"gsplat: {results['gsplat']}")
    results["load_end"] = os.getloadavg()
    log(f"load average at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in results['load_end'])}")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.write_text(_markdown(results))
    print(out.read_text())


def _markdown(results: dict) -> str:
    train, render, pool = results["training"], results["render"], results["render_pool"]
    load = lambda x: " / ".join(f"{v:.2f}" for v in x)
    lines = [
        "# Plain 3DGS vs Wild-GS speed on the embedded duck (`wild_duck`, 128 px, CPU)",
        "",
        (
            f"`python benchmarks/wildgs_speed.py` on {results['machine']}. The machine is shared with other jobs: load "
            f"average (1/5/15 min) {load(results['load_start'])} at the start, {load(results['load_end'])} at the end "
            "(2 cores), so the numbers are what a busy 2-core CPU gives, not an idle one."
        ),
        "",
        "## Training (the shared trainer's jitted step, compile excluded)",
        "",
        (
            f"Median of {results['steps']} steps after 2 warm-up steps; the first step includes the compile. Pool: the "
            "task's initial pool from the SfM points (densification not run)."
        ),
        "",
        "| model | it/s | median step | first step (compile) | active / capacity | params |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("gs3d", "plain 3DGS (`configs/gs3d.py`)"),
        ("wildgs", "Wild-GS (`configs/wildgs.py:wild_duck`)"),
    ):
        t = train[name]
        lines.append(f"| {label} | {t['it_per_s']:.2f} | {t['median_step_s']:.3f} s | {t['first_step_s']:.1f} s | "
                     f"{t['active']} / {t['capacity']} | {t['params']:,} |")  # fmt: skip
    ratio = train["gs3d"]["it_per_s"] / train["wildgs"]["it_per_s"]
    lines += ["", (f"Wild-GS's step costs {ratio:.1f}x plain 3DGS's here (ResNet-18 parsing UNet, triplane and a second "
              "rasterization for the reference depth, at 128 px).")]  # fmt: skip
    lines += [
        "",
        (
            f"## Rendering ({pool['gaussians']} Gaussians in {pool['capacity']} slots at {pool['width']}x{pool['height']}: "
            f"{pool['source']})"
        ),
        "",
        f"Median of {results['renders']} jitted renders of one training camera, after one compiling call.",
        "",
        "| renderer | FPS | median | first call (compile) | tile-Gaussian pairs (capacity) |",
        "|---|---|---|---|---|",
    ]
    labels = {"gs3d_xla": "plain 3DGS, XLA rasterizer", "wildgs_xla": "Wild-GS with cached reference SH, XLA",
              "gs3d_pallas_interpret": "plain 3DGS, Pallas in interpret mode (CPU; not a speed)"}  # fmt: skip
    for name, label in labels.items():
        if name in render:
            r = render[name]
            pairs = f"{r['pairs']:,} ({results['intersection_capacity']:,}){' overflow' if r['overflow'] else ''}"
            lines.append(
                f"| {label} | {r['fps']:.2f} | {r['median_s'] * 1000:.1f} ms | {r['first_call_s']:.1f} s | {pairs} |"
            )
    ref = results["set_reference"]
    lines += [
        "",
        (
            f"Setting a reference (`WildGS.set_reference`: parsing UNet, rendered depth, triplane, fusion MLP, once per "
            f"reference image): {ref['median_s'] * 1000:.0f} ms (first call with compile {ref['first_call_s']:.1f} s). "
            "After it Wild-GS renders the cached SH through the same rasterizer on the same pool (the paper: 227 vs 220 "
            f"FPS for 3DGS on an RTX 3090); here its render took {render['wildgs_xla']['median_s'] / render['gs3d_xla']['median_s']:.2f}x "
            "plain 3DGS's time."
        ),
        "",
        (
            "The Pallas rasterizer is the GPU/TPU path. On CPU it runs only in interpret mode: `pallas_call(interpret=True)` "
            "discharges the kernel into ordinary XLA loops over its grid, a correctness path whose tiling and memory "
            "layout are chosen for GPU/TPU, so its time here is no measure of its speed on an accelerator. "
            + (
                f"Measured anyway: {render['gs3d_pallas_interpret']['median_s'] * 1000:.0f} ms per render (median of 3) "
                f"vs {render['gs3d_xla']['median_s'] * 1000:.0f} ms for the XLA path, the same image within "
                f"{results['pallas_vs_xla_max_abs_diff']:.1e}."
                if "gs3d_pallas_interpret" in render
                else "Not timed in this run (--no-pallas)."
            )
        ),
        "",
        "## gsplat",
        "",
    ]
    g = results["gsplat"]
    if not g.get("importable"):
        lines.append(f"gsplat does not import here: {g['error']}")
    else:
        lines.append(f"gsplat {g['version']} imports (torch {g['torch']}, CUDA available: {g['cuda_available']}). "
                     f"`gsplat.rasterization` on CPU tensors: {g['cpu_rasterization']}. It needs a CUDA device (its "
                     "compositor is a CUDA op), so no gsplat numbers on this machine.")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
