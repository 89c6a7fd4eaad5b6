"""Benchmark of kernels.rasterize: forward and forward+backward time and peak memory, ours vs PyTorch references.

    python benchmarks/rasterize.py [--quick] [--out benchmarks/results]

Scenes: 10k / 100k / 1M random Gaussians at 256x256 and 1920x1080, one camera, RGB, "3dgs" convention.
Compared in one run, as ratios (reference time / our time, > 1 means ours is faster):
  * projection + SH (degree 3): ours (jit) vs gsplat 1.5.3's PyTorch implementation (`gsplat.cuda._torch_impl`),
  * full render: ours vs a dense PyTorch compositor (gsplat projection + SH, tile lists padded to the busiest tile,
    cumprod compositing; autograd for the backward), the CPU stand-in for gsplat's CUDA-only compositor,
  * on a GPU also: ours impl="pallas" vs impl="xla", and gsplat CUDA `rasterization` when it imports.
Memory: ours = XLA's compiled memory analysis (arguments + outputs + temporaries); torch = peak RSS growth of a
fresh subprocess running only that case. `--quick` (CPU) runs only what finishes in a few minutes on 2 cores and
lists every skipped case with the reason. Writes JSON + markdown under --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RESOLUTIONS = {"256x256": (256, 256), "1080p": (1920, 1080)}
COUNTS = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


def make_scene(n: int, width: int, height: int, seed: int = 0):
    """Random Gaussians in front of a camera at the origin; sizes shrink with N so coverage stays similar."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(2.0, 6.0, n)
    focal = 0.8 * width
    xy = rng.uniform(-0.5, 0.5, (n, 2)) * np.array([width, height]) / focal * depth[:, None]
    means = np.concatenate([xy, depth[:, None]], 1).astype(np.float32)
    scale = 0.02 * (10_000 / n) ** (1 / 3) * (width / 256) ** 0.0
    scales = (scale * np.exp(rng.normal(0, 0.3, (n, 3)))).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    opacities = rng.uniform(0.1, 0.9, n).astype(np.float32)
    sh = (0.2 * rng.normal(size=(n, 16, 3))).astype(np.float32)
    viewmat = np.eye(4, dtype=np.float32)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32)
    return means, quats, scales, opacities, sh, viewmat, K


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ours(n, width, height, impl, repeats, backward=True):
    import jax
    import jax.numpy as jnp

    from kernels.rasterize import project_gaussians, rasterize
    from kernels.rasterize.conventions import get_convention
    from kernels.rasterize.sh import eval_sh

    means, quats, scales, opacities, sh, viewmat, K = (jnp.asarray(a) for a in make_scene(n, width, height))
    args = (means, quats, scales, opacities, sh)

    def count(means, quats, scales, opacities, sh):
        out = rasterize(means, quats, scales, opacities, sh, viewmat, K, width, height, sh_degree=3, capacity=1024)
        return out.n_intersections

    # Arrays go in as arguments, never as closed-over constants (XLA would try to constant-fold them).
    pairs = int(jax.jit(count)(*args)[0])
    capacity = int(pairs * 1.1) + 1024

    def loss(means, quats, scales, opacities, sh):
        out = rasterize(means, quats, scales, opacities, sh, viewmat, K, width, height, sh_degree=3,
                        capacity=capacity, impl=impl)  # fmt: skip
        return jnp.sum(out.image) + jnp.sum(out.alpha)

    result = {"intersections": pairs}
    fwd = jax.jit(loss).lower(*args).compile()
    result["fwd_s"] = _time(lambda: jax.block_until_ready(fwd(*args)), repeats)
    result["fwd_mem_mb"] = _memory_mb(fwd)
    if backward:
        bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).lower(*args).compile()
        result["fwd_bwd_s"] = _time(lambda: jax.block_until_ready(bwd(*args)), repeats)
        result["fwd_bwd_mem_mb"] = _memory_mb(bwd)
    conv = get_convention("gsplat")

    def project_and_shade(means, quats, scales, sh):
        proj = project_gaussians(means, quats, scales, viewmat, K, width, height, conv)
        return proj, eval_sh(3, means - (-viewmat[:3, :3].T @ viewmat[:3, 3]), sh)

    proj_fn = jax.jit(project_and_shade).lower(means, quats, scales, sh).compile()
    result["project_sh_s"] = _time(lambda: jax.block_until_ready(proj_fn(means, quats, scales, sh)), repeats)
    return result


def _memory_mb(compiled) -> float | None:
    try:
        analysis = compiled.memory_analysis()
        total = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
        return total / 2**20
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def _torch_case(queue, n, width, height, repeats, case):
    """Runs in a fresh process so its peak RSS growth is this case's memory."""
    import resource

    import torch
    from gsplat.cuda import _torch_impl as gs

    torch.set_num_threads(os.cpu_count() or 1)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    means, quats, scales, opacities, sh, viewmat, K = (torch.from_numpy(a) for a in make_scene(n, width, height))

    def project_and_shade():
        covars, _ = gs._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
        radii, means2d, depths, conics, _ = gs._fully_fused_projection(
            means, covars, viewmat[None], K[None], width, height
        )
        campos = torch.linalg.inv(viewmat)[:3, 3]
        colors = gs._spherical_harmonics(3, means - campos, sh)
        return radii[0], means2d[0], depths[0], conics[0], torch.clamp_min(colors + 0.5, 0.0)

    out = {}
    if case == "gsplat_cuda":  # untested here (no GPU in the development task); guarded by the caller
        import gsplat

        device = torch.device("cuda")
        params = [t.to(device).requires_grad_(True) for t in (means, quats, scales, opacities, sh)]
        vm, k = viewmat.to(device)[None], K.to(device)[None]

        def render(backward):
            image, alpha, _ = gsplat.rasterization(*params, vm, k, width, height, sh_degree=3)
            if backward:
                (image.sum() + alpha.sum()).backward()
            torch.cuda.synchronize()

        with torch.no_grad():
            out["fwd_s"] = _time(lambda: render(False), repeats)
        torch.cuda.reset_peak_memory_stats()
        out["fwd_bwd_s"] = _time(lambda: render(True), repeats)
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    elif case == "project_sh":
        with torch.no_grad():
            out["project_sh_s"] = _time(project_and_shade, repeats)
    else:
        params = [means, quats, scales, opacities, sh]

        def render(backward):
            for p in params:
                p.requires_grad_(backward)
            radii, means2d, depths, conics, colors = project_and_shade()
            image = dense_torch_composite(means2d, conics, opacities, colors, depths, radii, width, height)
            if backward:
                image.sum().backward()
            return image

        with torch.no_grad():
            out["fwd_s"] = _time(lambda: render(False), repeats)
        out["fwd_bwd_s"] = _time(lambda: render(True), repeats)
    out["peak_rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    queue.put(out)


def dense_torch_composite(means2d, conics, opacities, colors, depths, radii, width, height, tile=16):
    """Dense PyTorch compositor: per-tile lists padded to the busiest tile's count K, cumprod transmittance."""
    import torch

    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    lo = torch.clamp(torch.floor((means2d.detach() - radii) / tile), min=0).long()
    hi = torch.ceil((means2d.detach() + radii) / tile).long()
    hi = torch.minimum(hi, torch.tensor([tiles_x, tiles_y]))
    visible = (radii > 0).all(-1) & (hi > lo).all(-1)
    tile_lists = []
    ids = torch.nonzero(visible)[:, 0]
    counts = ((hi - lo).prod(-1))[ids]
    gauss = torch.repeat_interleave(ids, counts)
    local = torch.arange(len(gauss)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    w = (hi - lo)[gauss, 0]
    tile_id = (lo[gauss, 1] + local // w) * tiles_x + lo[gauss, 0] + local % w
    key = tile_id.double() * 1e6 + depths.detach()[gauss].double()
    order = torch.argsort(key)
    tile_id, gauss = tile_id[order], gauss[order]
    per_tile = torch.bincount(tile_id, minlength=tiles_x * tiles_y)
    k = int(per_tile.max())
    rank = torch.arange(len(gauss)) - torch.repeat_interleave(torch.cumsum(per_tile, 0) - per_tile, per_tile)
    table = torch.full((tiles_x * tiles_y, k), -1, dtype=torch.long)
    table[tile_id, rank] = gauss
    tile_lists.append(table)
    valid = table >= 0
    idx = table.clamp(min=0)
    ty, tx = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
    t = torch.arange(tiles_x * tiles_y)
    px = ((t % tiles_x)[:, None] * tile + tx.reshape(-1)[None]).float() + 0.5
    py = ((t // tiles_x)[:, None] * tile + ty.reshape(-1)[None]).float() + 0.5
    dx = means2d[idx][:, None, :, 0] - px[..., None]
    dy = means2d[idx][:, None, :, 1] - py[..., None]
    a, b, c = (conics[idx][:, None, :, i] for i in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = torch.clamp_max(opacities[idx][:, None, :] * torch.exp(power), 0.99)
    alpha = torch.where(valid[:, None, :] & (power <= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
    weights = alpha * trans * (trans >= 1e-4)
    image = torch.einsum("tpk,tkc->tpc", weights, colors[idx])
    image = image.reshape(tiles_y, tiles_x, tile, tile, 3).permute(0, 2, 1, 3, 4).reshape(tiles_y * tile, -1, 3)
    return image[:height, :width]


def run_torch(n, width, height, repeats, case, timeout):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_torch_case, args=(queue, n, width, height, repeats, case))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        return {"error": f"timeout after {timeout}s"}
    return queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized subset; skipped cases are listed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--counts", default=",".join(COUNTS), help=f"subset of {','.join(COUNTS)}")
    parser.add_argument("--resolutions", default=",".join(RESOLUTIONS), help=f"subset of {','.join(RESOLUTIONS)}")
    parser.add_argument(
        "--references",
        default=None,
        help="torch references to run, from project_sh,dense,gsplat_cuda (default: project_sh,dense on CPU; all "
        "three on a GPU; none for no reference)",
    )
    parser.add_argument("--torch-timeout", type=int, default=900, help="seconds per torch reference case")
    args = parser.parse_args()

    import jax

    backend = jax.default_backend()
    impls = ["xla"] + (["pallas"] if backend in ("gpu", "tpu") else [])
    known_refs = ("project_sh", "dense", "gsplat_cuda")
    refs = args.references.split(",") if args.references else list(known_refs[: 3 if backend == "gpu" else 2])
    refs = [] if refs == ["none"] else refs
    for name, chosen, known in (("--references", refs, known_refs), ("--counts", args.counts.split(","), COUNTS),
                                ("--resolutions", args.resolutions.split(","), RESOLUTIONS)):  # fmt: skip
        unknown = [c for c in chosen if c and c not in known]
        if unknown:
            parser.error(f"{name}: unknown {unknown}; choose from {', '.join(known)}")
    rows, skipped = [], []
    for res_name in args.resolutions.split(","):
        width, height = RESOLUTIONS[res_name]
        for count_name in args.counts.split(","):
            n = COUNTS[count_name]
            case = f"{count_name} @ {res_name}"
            if args.quick and (n > 100_000 or res_name == "1080p"):
                skipped.append(f"{case}: skipped by --quick (minutes per call on a 2-core CPU)")
                continue
            dense = not (args.quick and n > 10_000)
            if not dense:
                skipped.append(f"{case} torch dense compositor: skipped by --quick (about a minute per call, GBs)")
            row = {"case": case, "n": n, "width": width, "height": height}
            for impl in impls:
                row[f"ours_{impl}"] = bench_ours(n, width, height, impl, args.repeats)
            timeout = args.torch_timeout
            if "project_sh" in refs:
                row["gsplat_torch_project_sh"] = run_torch(n, width, height, args.repeats, "project_sh", timeout)
            if dense and "dense" in refs:
                row["torch_dense"] = run_torch(n, width, height, max(1, args.repeats // 2), "dense", timeout)
            if backend == "gpu" and "gsplat_cuda" in refs:
                row["gsplat_cuda"] = run_torch(n, width, height, args.repeats, "gsplat_cuda", timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "backend": backend,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "quick": args.quick,
        "references": refs,
        "load_average_1_5_15": os.getloadavg(),  # the CPU may be shared: read timings with this in mind
        "skipped": skipped,
    }
    os.makedirs(args.out, exist_ok=True)
    tag = f"rasterize_{backend}{'_quick' if args.quick else ''}"
    with open(os.path.join(args.out, tag + ".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, tag + ".md"), "w") as f:
        f.write(to_markdown(meta, rows))
    print(to_markdown(meta, rows))


def _fmt(x, unit=""):
    return "-" if x is None else f"{x:.3g}{unit}"


def to_markdown(meta, rows) -> str:
    lines = [
        (
            f"# kernels.rasterize benchmark ({meta['backend']}, {meta['device']}, {meta['cpu_count']} CPUs, "
            f"jax {meta['jax']}{', --quick' if meta['quick'] else ''})"
        ),
        "",
        f"Load average during the run (1/5/15 min): {', '.join(f'{x:.1f}' for x in meta['load_average_1_5_15'])}.",
        "",
        "Times are medians of warm calls in seconds; ratio = reference / ours (> 1: ours faster).",
        "",
        (
            "| case | pairs | ours fwd | ours fwd+bwd | ours mem fwd / fwd+bwd (MB) | proj+SH ours | proj+SH gsplat torch |"
            " ratio | torch dense fwd | ratio | torch dense fwd+bwd | ratio | torch dense peak RSS (MB) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = row["ours_xla"]
        ref = row.get("gsplat_torch_project_sh", {})
        dense = row.get("torch_dense", {})

        def ratio(a, b):
            return _fmt(a / b if a and b else None, "x")

        lines.append(
            f"| {row['case']} | {ours['intersections']} | {_fmt(ours.get('fwd_s'))} | {_fmt(ours.get('fwd_bwd_s'))} | "
            f"{_fmt(ours.get('fwd_mem_mb'))} / {_fmt(ours.get('fwd_bwd_mem_mb'))} | {_fmt(ours.get('project_sh_s'))} | "
            f"{_fmt(ref.get('project_sh_s'))} | {ratio(ref.get('project_sh_s'), ours.get('project_sh_s'))} | "
            f"{_fmt(dense.get('fwd_s'))} | {ratio(dense.get('fwd_s'), ours.get('fwd_s'))} | "
            f"{_fmt(dense.get('fwd_bwd_s'))} | {ratio(dense.get('fwd_bwd_s'), ours.get('fwd_bwd_s'))} | "
            f"{_fmt(dense.get('peak_rss_growth_mb'))} |"
        )
        if "gsplat_cuda" in row:
            cuda = row["gsplat_cuda"]
            lines.append(
                f"| {row['case']} gsplat CUDA | | {_fmt(cuda.get('fwd_s'))} | {_fmt(cuda.get('fwd_bwd_s'))} | "
                f"peak {_fmt(cuda.get('peak_cuda_mb'))} | | | | | | | | {cuda.get('error', '')} |"
            )
        if "ours_pallas" in row:
            pallas = row["ours_pallas"]
            lines.append(
                f"| {row['case']} pallas | | {_fmt(pallas.get('fwd_s'))} ({ratio(ours.get('fwd_s'), pallas.get('fwd_s'))}"
                f" vs xla) | {_fmt(pallas.get('fwd_bwd_s'))} | {_fmt(pallas.get('fwd_mem_mb'))} / "
                f"{_fmt(pallas.get('fwd_bwd_mem_mb'))} | | | | | | | | |"
            )
    if meta["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {s}" for s in meta["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
