"""SAM2 image-encoder latency: ours (jax.jit, f32) vs the official PyPI `sam2` (torch, eager, f32) on one device.

    python benchmarks/sam2.py                       # tiny, 1024x1024, CPU
    python benchmarks/sam2.py --variants t b+ --image-sizes 512 1024 --repeats 5

Both sides run `forward_image` (Hiera trunk + FPN neck + the decoder's conv_s0/conv_s1) on one random
1024x1024 image with random weights. Ours is timed after compilation (compile time is reported separately); runs
of ours and the reference alternate, so load changes on a shared machine affect both alike.
Writes benchmarks/results/sam2_<backend>.json and .md.

    python benchmarks/sam2.py --tracking --image-sizes 512 --frames 16 --repeats 3

times per-frame video tracking instead: our streaming `SAM2VideoPredictor` (one object clicked on frame 0, each
tracked frame = image encoder + memory attention + heads + memory encoder, jitted) vs the official
`SAM2VideoPredictor.propagate_in_video` (torch eager) on the same frames (a camera pan over a real photo), in
`--repeats` alternating rounds of the whole video after one untimed round of ours (which compiles); the first 2
tracked frames of each round excluded (warm-up). Writes sam2_tracking_<backend>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# This file is named sam2.py: drop its folder from the path so `import sam2` finds the official package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import zoo

_CONFIGS = {"t": "sam2_hiera_t", "s": "sam2_hiera_s", "b+": "sam2_hiera_b+", "l": "sam2_hiera_l"}


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def build_ours(variant: str, image_size: int):
    """A timed callable for our jitted forward_image, and its compile time."""
    model = zoo.create_model(_CONFIGS[variant], rngs=nnx.Rngs(0), image_size=image_size)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_image(x)["backbone_fpn"])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, image_size, image_size, 3), np.float32))
    start = time.perf_counter()
    compiled = forward.lower(state, x).compile()
    compile_s = time.perf_counter() - start
    run = lambda: jax.block_until_ready(compiled(state, x))
    run()  # warm-up
    return run, compile_s


def build_reference(variant: str, image_size: int):
    """A timed callable for the official model's forward_image (torch eager, inference mode), or None."""
    try:
        import torch
        from sam2.build_sam import build_sam2
    except ImportError as err:
        print(f"reference sam2/torch not installed ({err}); timing ours only", file=sys.stderr)
        return None, {}
    ref = build_sam2(f"configs/sam2/sam2_hiera_{variant}.yaml", ckpt_path=None, device="cpu",
                     hydra_overrides_extra=[f"++model.image_size={image_size}"]).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, image_size, image_size), np.float32))

    def run():
        with torch.inference_mode():
            ref.forward_image(x)

    run()  # warm-up
    return run, {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def bench(variant: str, image_size: int, repeats: int, with_reference: bool) -> dict:
    """Alternate ours and the reference run by run, so that load changes on a shared machine hit both alike."""
    ours, compile_s = build_ours(variant, image_size)
    ref, ref_info = build_reference(variant, image_size) if with_reference else (None, {})
    ours_times, ref_times = [], []
    for _ in range(repeats):
        ours_times += _time(ours, 1)
        if ref is not None:
            ref_times += _time(ref, 1)
    row = {"model": _CONFIGS[variant], "image_size": image_size,
           "ours": {"compile_s": compile_s, "times_s": ours_times, "median_s": statistics.median(ours_times)},
           "reference": None, "speedup": None}
    if ref is not None:
        row["reference"] = dict(ref_info, times_s=ref_times, median_s=statistics.median(ref_times))
        row["speedup"] = row["reference"]["median_s"] / row["ours"]["median_s"]
    return row


def bench_tracking(variant: str, image_size: int, num_frames: int, rounds: int = 3, warmup: int = 2) -> dict:
    """Median per-frame tracking latency of ours and of the official video predictor (CPU), alternating rounds.

    One round = the whole video through ours (reset, click, track every frame), then through the official
    predictor; rounds alternate so load changes on a shared machine hit both alike. Per side: the median over all
    rounds of the per-frame times after the first `warmup` tracked frames of each round, and the spread of the
    per-round medians."""
    import tempfile

    from PIL import Image
    from sklearn.datasets import load_sample_image

    from models.sam2.video import SAM2VideoPredictor

    photo = load_sample_image("china.jpg")
    frames = [np.roll(photo, 8 * k, axis=1) for k in range(num_frames)]
    click = [[320.0, 200.0]]
    model = zoo.create_model(_CONFIGS[variant], rngs=nnx.Rngs(0), image_size=image_size)
    predictor = SAM2VideoPredictor(model, num_frames=num_frames)

    def run_ours() -> list[float]:
        predictor.reset()
        predictor.add_points(0, frames[0], obj_id=1, points=click, labels=[1])
        times = []
        for index in range(1, num_frames):
            start = time.perf_counter()
            predictor.track(index, frames[index])
            times.append(time.perf_counter() - start)
        return times

    run_theirs = None
    try:
        import torch
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError:
        torch = None
    folder = tempfile.TemporaryDirectory()
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        ref = build_sam2_video_predictor(f"configs/sam2/sam2_hiera_{variant}.yaml", ckpt_path=None, device="cpu",
                                         hydra_overrides_extra=[f"++model.image_size={image_size}"])
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(os.path.join(folder.name, f"{index:05d}.jpg"))

        def run_theirs() -> list[float]:
            with torch.inference_mode():
                state = ref.init_state(folder.name)
                ref.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=click, labels=[1])
                times, start = [], time.perf_counter()
                for index, _, _ in ref.propagate_in_video(state):
                    if index > 0:
                        times.append(time.perf_counter() - start)
                    start = time.perf_counter()
            return times

    first = run_ours()  # compiles every memory-frame bucket: reported apart, not in the rounds
    ours_rounds, theirs_rounds = [], []
    for _ in range(rounds):
        ours_rounds.append(run_ours()[warmup:])
        if run_theirs is not None:
            theirs_rounds.append(run_theirs()[warmup:])
    folder.cleanup()
    ours_all = [t for times in ours_rounds for t in times]
    row = {"model": _CONFIGS[variant], "image_size": image_size, "frames": num_frames, "rounds": rounds,
           "ours_s": statistics.median(ours_all), "ours_round_medians_s": [statistics.median(t) for t in ours_rounds],
           "ours_first_s": first[0], "ours_compile_round_s": sum(first), "ours_times_s": ours_rounds,
           "reference_s": None, "speedup": None}
    if theirs_rounds:
        theirs_all = [t for times in theirs_rounds for t in times]
        row["reference_s"] = statistics.median(theirs_all)
        row["reference_round_medians_s"] = [statistics.median(t) for t in theirs_rounds]
        row["reference_times_s"] = theirs_rounds
        row["speedup"] = row["reference_s"] / row["ours_s"]
        row["round_speedups"] = [t / o for o, t in zip(row["ours_round_medians_s"], row["reference_round_medians_s"])]
    return row


def main_tracking(args) -> int:
    """--tracking: per-frame video tracking latency, ours vs the official predictor."""
    device = jax.devices()[0]
    rows = []
    load_start = os.getloadavg()
    for variant in args.variants:
        for image_size in args.image_sizes:
            rows.append(bench_tracking(variant, image_size, args.frames, args.repeats))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("times_s")}))
    result = {"benchmark": "SAM2 per-frame video tracking latency (1 object, f32, alternating rounds)",
              "backend": device.platform, "device": str(device.device_kind), "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "load_average_start": load_start, "load_average": os.getloadavg(),
              "platform": platform.platform(), "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"sam2_tracking_{device.platform}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# SAM2 per-frame tracking latency ({device.device_kind}, 1 object, f32)", "",
             (f"jax {jax.__version__}; {os.cpu_count()} CPUs; load average at the start {load_start[0]:.1f}, at the "
              f"end {os.getloadavg()[0]:.1f} (the machine was shared, not idle); {args.repeats} alternating rounds, "
              "median over all rounds' frames 3 on (per-round medians in brackets)"), "",
             "| model | size | frames | ours (s/frame) | PyPI sam2 (s/frame) | speed-up (per round) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ours = f"{row['ours_s']:.2f} [{', '.join(f'{t:.2f}' for t in row['ours_round_medians_s'])}]"
        if row["reference_s"]:
            ref = (f"{row['reference_s']:.2f} [{', '.join(f'{t:.2f}' for t in row['reference_round_medians_s'])}] | "
                   f"{row['speedup']:.2f}x [{', '.join(f'{t:.2f}' for t in row['round_speedups'])}]")
        else:
            ref = "- | -"
        lines.append(f"| {row['model']} | {row['image_size']} | {row['frames']} | {ours} | {ref} |")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["t"], choices=sorted(_CONFIGS))
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tracking", action="store_true", help="per-frame video tracking latency instead")
    parser.add_argument("--frames", type=int, default=10, help="video length for --tracking")
    args = parser.parse_args(argv)
    if args.tracking:
        return main_tracking(args)

    device = jax.devices()[0]
    rows = []
    for variant in args.variants:
        for image_size in args.image_sizes:
            row = bench(variant, image_size, args.repeats,
                        with_reference=not args.no_reference and device.platform == "cpu")
            rows.append(row)
            print(json.dumps(row))
    result = {
        "benchmark": "SAM2 forward_image latency (batch 1, f32)",
        "backend": device.platform, "device": str(device.device_kind), "jax": jax.__version__,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "platform": platform.platform(),
        "rows": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"sam2_{device.platform}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        f"# SAM2 image encoder latency ({device.device_kind}, batch 1, f32)", "",
        f"jax {jax.__version__}; {os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f}", "",
        "| model | size | ours jit (s) | compile (s) | PyPI sam2 torch (s) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ref = row["reference"]
        lines.append(
            f"| {row['model']} | {row['image_size']} | {row['ours']['median_s']:.2f} | {row['ours']['compile_s']:.1f} "
            f"| {ref['median_s']:.2f} | {row['speedup']:.2f}x |" if ref else
            f"| {row['model']} | {row['image_size']} | {row['ours']['median_s']:.2f} | {row['ours']['compile_s']:.1f} "
            "| - | - |"
        )
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
