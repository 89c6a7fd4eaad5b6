"""ILA (K400, X-CLIP head) speed: ours (`jax.jit`) vs the official PyTorch code (eager), same CPU, same run.

    python benchmarks/ila.py --official /path/to/ILA [--configs b16,tiny] [--batch 1] [--rounds 2]
    ILA_OFFICIAL=/path/to/ILA python benchmarks/ila.py        # the same, path from the environment
    python benchmarks/ila.py --tiny                           # only the reduced config (width 192, 6 layers)
    python benchmarks/ila.py                                  # ours only (no reference column)

`--official` is a checkout of https://github.com/Francis-Rings/ILA, branch `master` (K400), e.g.
`git archive master | tar -x -C DIR`. Nothing of it is copied into this repository and no fetched file is edited:
the official `clip` package, `models.xclip` and `utils.optimizer` are imported at run time. Shims, applied from
this script:
- module names: the official `models` / `utils` packages collide with this repository's `models` package. The
  official directory is put first on `sys.path`, our `models*` entries are moved out of `sys.modules` while `clip`
  (first: `models.xclip` <-> `clip` is a circular import otherwise, spec section 1.9), `models.xclip` and
  `utils.optimizer` are imported, then the official modules are moved to private names and ours put back;
- the model is built with `XCLIP(...)` directly (as `build_model` does, without an OpenAI state dict), at the
  official `load()` defaults: mit_layers 1, prompts_layers 2, prompts_alpha 0.1, use_cache True, drop path 0;
- cached class texts: the text tower is frozen and the official `use_cache` encodes the 400 class texts once;
  here both sides get the same random (400, E) features as the cache (`model.cache_text_features`), and the
  instance's `cache_text` is replaced by one that returns them. The official `cache_text` also calls
  `self.eval(); self.train()` on every forward (so `main.py:validate` actually runs BatchNorm in train mode); the
  replacement keeps `model.eval()` for the inference timing;
- frozen parts: `requires_grad=False` on every parameter whose name contains none of `message_`, `temporal_`,
  `mit` (ours: `models.ila.groups.FROZEN_PATTERNS`). That is the CLIP image tower (`build_model`'s frozen_list),
  the text tower and logit_scale (`fix_text`), and also the prompts, which the official code leaves at
  requires_grad=True but never gives to the optimizer (so it computes their gradients for nothing);
- the optimizer is the official `utils.optimizer.build_optimizer(config, model)` (AdamW (0.9, 0.98), eps 1e-8; the
  message_ / temporal_ / mit groups with their lr and weight decay) with a stand-in config (TRAIN.LR 8e-6,
  TRAIN.WEIGHT_DECAY 0.003, MODEL.FIX_TEXT False since the freezing is done above). No LR schedule on either side.
No torchvision stub was needed. The official step: `model.train()`, `message_attn.is_training = True` in every
block (`main.py:train_one_epoch`), forward, `CrossEntropyLoss` + the summed cosine losses, backward,
`optimizer.step()`, float32 (the official apex AMP is a CUDA feature). Inference: `model.eval()`,
`is_training = False` (`main.py:validate`), `torch.no_grad()`. `torch.set_num_threads(os.cpu_count())`
(`--torch-threads`), and `--omp-wait-policy auto` (default) sets OMP_WAIT_POLICY=PASSIVE before torch is imported
when the 1-min load average is > 0.5 at the start (libgomp's spinning barriers stall on a loaded machine, see
benchmarks/maskalign.py); an OMP_WAIT_POLICY in the environment wins.

Ours: `zoo.create_model("ila_vit_b16_k400_8f")` (or the reduced config's overrides), random init, float32.
Inference: one jitted `model(video, text_features=..., train=False).logits`. Train step: one jitted, donated step:
forward (`train=True`, epoch 0: the nine-offset mask jitter on, BatchNorm on batch statistics), softmax CE +
`aux_loss` (the summed cosine losses), gradients of the official trainable groups only (`FROZEN_PATTERNS`
frozen), and the zoo optimizer (`zoo.train.optim.build_optimizer`) with `official_param_groups()`, AdamW (0.9,
0.98), eps 1e-8, constant LR; trainable params, optimizer state and BatchNorm statistics are donated.

GFLOPs per view (one clip of T frames at 224 px): ours from XLA's cost analysis of the compiled inference forward
(`jax.jit(f).lower(...).compile().cost_analysis()["flops"]`, all operations, so slightly more than the MACs of the
matmuls and convs; flops / 2 is reported as GMACs), for the whole K400 forward (400 class texts through the
prompts) and for the visual encoder + MIT alone (`forward_features`, the part the spec measured). Official: torch's
`FlopCounterMode` (matmul / conv / attention only) on its no-grad forward, /2 = GMACs. Reference numbers from the
spec (section 1.1): measured visual + MIT 193.5 GMACs per view for B/16 x 8 frames (390.2 at 16 frames), and the
slides' 295 GFLOPs per view for B/16 x 16 frames (no 8-frame number; 295 / 2 = 147.5 if linear in frames).

Loader: `zoo.data.make_pipeline` over the offline `video_direction_speed` source (frames decoded once at short side
224, full frames: `crop=None`) with `zoo.data.make_video_transform(train=True, image_size=224)` (the official
train transform: short side 256, MultiScaleCrop, resize 224, ColorJitter, grayscale, normalise, erasing), batch 2,
`worker_count` 0 and 2, clips/s after one warm-up batch, compared with the train step's clips/s (the loader runs
alone, not concurrently with a step).

Configs: `b16` = CLIP ViT-B/16, 12 layers, width 768, embed 512, 8 frames, 224 px (text tower width 512, 12 layers,
built but unused: cached features); `tiny` = width 192, 6 layers, 3 heads, embed 192, text tower width 192, 1 layer,
8 frames, 224 px, patch 16 (interactive width 256 as officially: it is hard-coded there). Batch `--batch` (1).
Implementations are timed in alternating rounds (ours, official) so that load changes hit both; numbers are medians
over all timed iterations. Writes benchmarks/results/ila_<backend>.{json,md}. Timings depend on the machine and
its load: compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

import models.ila  # noqa: F401  (ours, imported before the official `models` package is swapped in)
import zoo
from benchmarks import common
from benchmarks.common import busy_processes, cpu_model, fmt, log, timed
from models.ila.groups import ADAMW, BASE_LR, BASE_WEIGHT_DECAY, FROZEN_PATTERNS, official_param_groups
from zoo.train.optim import build_optimizer, trainable_filter

MODEL = "ila_vit_b16_k400_8f"
FRAMES, IMG, PATCH, NUM_TEXTS = 8, 224, 16, 400
CONFIGS = {
    "b16": {"label": "B/16 x 8 frames, 224 px", "vision": (768, 12), "embed": 512, "text": (512, 12)},
    "tiny": {"label": "tiny: width 192, 6 layers, 8 frames, 224 px", "vision": (192, 6), "embed": 192,
             "text": (192, 1)},
}
SPEC = {"b16_8f_gmacs_measured": 193.5, "b16_16f_gmacs_measured": 390.2, "b16_16f_gflops_slides": 295.0}
TRAINABLE_KEYS = ("message_", "temporal_", "mit")


# --- ours ----------------------------------------------------------------------------------------------------------
def _flops(cost) -> float | None:
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return None if not cost or "flops" not in cost else float(cost["flops"])


def setup_ours(cfg: dict, video: np.ndarray, labels: np.ndarray, text: np.ndarray) -> dict:
    (width, layers), (t_width, t_layers) = cfg["vision"], cfg["text"]
    model = zoo.create_model(MODEL, rngs=nnx.Rngs(0), vision_width=width, vision_layers=layers,
                             embed_dim=cfg["embed"], text_width=t_width, text_layers=t_layers)
    trainable = trainable_filter(FROZEN_PATTERNS)
    # trainable params | frozen params | the rest (BatchNorm statistics, ...)
    graphdef, params, frozen, rest = nnx.split(model, trainable, nnx.Param, ...)
    opt_cfg = ml_collections.ConfigDict(dict(
        ADAMW, lr=BASE_LR, weight_decay=BASE_WEIGHT_DECAY, schedule="constant",
        groups=[dict(g, schedule="constant") for g in official_param_groups()], frozen=list(FROZEN_PATTERNS)))
    tx, _ = build_optimizer(opt_cfg, total_steps=1000, mask_frozen=False)
    opt_state = tx.init(params)
    x, y, tf = jnp.asarray(video), jnp.asarray(labels), jnp.asarray(text)

    def train_step(params, opt_state, rest, frozen, x, y, tf, epoch):
        m = nnx.merge(graphdef, params, frozen, rest)

        def loss_fn(m):
            out = m(x, text_features=tf, train=True, epoch=epoch)
            ce = optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()
            return ce + out.aux_loss

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(m)
        updates, opt_state = tx.update(grads, opt_state, params)
        _, _, _, new_rest = nnx.split(m, trainable, nnx.Param, ...)  # updated BatchNorm statistics
        return optax.apply_updates(params, updates), opt_state, new_rest, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))

    def infer(params, frozen, rest, x, tf):
        return nnx.merge(graphdef, params, frozen, rest)(x, text_features=tf, train=False).logits

    def features(params, frozen, rest, x):
        return nnx.merge(graphdef, params, frozen, rest).forward_features(x)

    state = {"params": params, "opt": opt_state, "rest": rest}
    start = time.perf_counter()
    lowered_infer = jax.jit(infer).lower(params, frozen, rest, x, tf)
    infer_c = lowered_infer.compile()
    compile_infer = time.perf_counter() - start
    lowered_features = jax.jit(features).lower(params, frozen, rest, x)
    flops = {"full_forward_flops": _flops(infer_c.cost_analysis()),
             "features_flops": _flops(lowered_features.compile().cost_analysis()),
             "cost_source": "Compiled.cost_analysis()['flops'] (optimised HLO, all ops)", "infer_compile_s": compile_infer}
    try:  # the estimate on the unoptimised HLO, for reference
        flops["full_forward_flops_lowered"] = _flops(lowered_infer.cost_analysis())
        flops["features_flops_lowered"] = _flops(lowered_features.cost_analysis())
    except Exception as error:  # noqa: BLE001
        flops["lowered_cost_analysis_error"] = repr(error)
    epoch = jnp.asarray(0, jnp.int32)

    def run_step():
        state["params"], state["opt"], state["rest"], loss = train_step(
            state["params"], state["opt"], state["rest"], frozen, x, y, tf, epoch)
        state["loss"] = float(loss)

    def run_infer():
        jax.block_until_ready(infer_c(state["params"], frozen, state["rest"], x, tf))

    counts = {"trainable": sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params)),
              "frozen": sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(frozen))}
    return {"train": run_step, "infer": run_infer, "state": state, "counts": counts, "flops": flops}


# --- official ------------------------------------------------------------------------------------------------------
def load_official(path: str) -> dict:
    """Import the official `clip`, `models.xclip` and `utils.optimizer` from a checkout, under private names, with
    this repository's `models` package left in place (see the module docstring)."""
    if not os.path.isfile(os.path.join(path, "models", "xclip.py")):
        raise FileNotFoundError(f"{path}/models/xclip.py not found: --official must be a checkout of "
                                "Francis-Rings/ILA (branch master)")
    names = ("models", "utils", "clip")
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
    sys.path.insert(0, os.path.abspath(path))
    # The official `models` has no __init__.py (a namespace package), so our regular `models` package would win
    # the path search: pre-seed the namespace with the official directory.
    namespace = types.ModuleType("models")
    namespace.__path__ = [os.path.join(os.path.abspath(path), "models")]
    sys.modules["models"] = namespace
    try:
        import clip  # noqa: F401  (before models.xclip: circular import otherwise)
        from utils import optimizer

        from models import xclip
    finally:
        sys.path.remove(os.path.abspath(path))
        official = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
        for k, v in official.items():
            sys.modules[f"_ila_official_{k}"] = v
        sys.modules.update(ours)
    return {"xclip": xclip, "optimizer": optimizer}


def setup_official(module: dict, cfg: dict, video: np.ndarray, labels: np.ndarray, text: np.ndarray,
                   count_flops: bool) -> dict:
    import torch

    (width, layers), (t_width, t_layers) = cfg["vision"], cfg["text"]
    torch.manual_seed(0)
    model = module["xclip"].XCLIP(
        cfg["embed"], IMG, layers, width, PATCH, 77, 49408, t_width, t_width // 64, t_layers,
        T=FRAMES, droppath=0.0, mit_layers=1, prompts_alpha=0.1, prompts_layers=2, use_cache=True,
    ).float()
    for name, p in model.named_parameters():
        p.requires_grad = any(key in name for key in TRAINABLE_KEYS)
    model.cache_text_features = torch.from_numpy(text)
    model.cache_text = types.MethodType(lambda self, tokens: self.cache_text_features, model)
    config = types.SimpleNamespace(MODEL=types.SimpleNamespace(FIX_TEXT=False),
                                   TRAIN=types.SimpleNamespace(LR=BASE_LR, WEIGHT_DECAY=BASE_WEIGHT_DECAY))
    optimizer = module["optimizer"].build_optimizer(config, model)
    blocks = model.visual.transformer.resblocks
    x = torch.from_numpy(video).permute(0, 1, 4, 2, 3).contiguous()  # (B, T, C, H, W)
    y = torch.from_numpy(labels).long()
    criterion = torch.nn.CrossEntropyLoss()
    state = {}

    def set_training(flag: bool):
        model.train(flag)
        for block in blocks:
            block.message_attn.is_training = flag

    def run_step():
        set_training(True)
        optimizer.zero_grad(set_to_none=True)
        logits, cos_losses = model(x, None)
        loss = criterion(logits, y) + sum(cos_losses)
        loss.backward()
        optimizer.step()
        state["loss"] = float(loss.detach())

    def run_infer():
        set_training(False)
        with torch.no_grad():
            model(x, None)

    flops = {}
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        set_training(False)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x, None)
        by_module = counter.get_flop_counts()
        total = counter.get_total_flops()

        def module_total(name):
            entry = by_module.get(name)
            return float(sum(entry.values())) if entry else None

        vis, mit = module_total("XCLIP.visual"), module_total("XCLIP.mit")
        flops = {"full_forward_flops": float(total),
                 "features_flops": (vis + mit) if vis is not None and mit is not None else None,
                 "counter": "torch.utils.flop_counter.FlopCounterMode (matmul/conv/attention; flops = 2 x MACs)"}
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad),
              "optimised": sum(p.numel() for g in optimizer.param_groups for p in g["params"])}
    return {"train": run_step, "infer": run_infer, "state": state, "counts": counts, "flops": flops}


# --- loader --------------------------------------------------------------------------------------------------------
def bench_loader(batch: int, workers: list[int], batches: int, short_side: int) -> dict:
    import zoo.data as zd

    start = time.perf_counter()
    source = zd.get_source("video_direction_speed", split="train", num_frames=FRAMES, short_side=short_side,
                           crop=None)
    log(f"loader: source {source!r} ready in {time.perf_counter() - start:.1f}s")
    transform = zd.make_video_transform(train=True, image_size=IMG)
    rows = {}
    for count in workers:
        pipeline = zd.make_pipeline(source, batch_size=batch, train=True, transform=transform, seed=0,
                                    worker_count=count, shard_by_process=False)
        iterator = pipeline.iterator()
        start = time.perf_counter()
        first = next(iterator)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        elapsed = time.perf_counter() - start
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        shape = tuple(first["video"].shape)
        rows[str(count)] = {"clips_per_s": batches * batch / elapsed, "seconds": elapsed, "batches": batches,
                            "first_batch_s": warm, "video_shape": shape, "dtype": str(first["video"].dtype)}
        log(f"loader: worker_count {count}: {rows[str(count)]['clips_per_s']:.2f} clips/s "
            f"({batches} batches of {batch} in {elapsed:.2f}s; first batch {warm:.1f}s; {shape})")
    return rows


# --- driver --------------------------------------------------------------------------------------------------------
def bench_config(key: str, batch: int, official, args) -> dict:
    cfg = CONFIGS[key]
    rng = np.random.default_rng(0)
    video = rng.standard_normal((batch, FRAMES, IMG, IMG, 3), dtype=np.float32)
    labels = rng.integers(0, NUM_TEXTS, (batch,)).astype(np.int32)
    text = rng.standard_normal((NUM_TEXTS, cfg["embed"]), dtype=np.float32)
    log(f"{key}: building ours (batch {batch}) and compiling the inference forward")
    start = time.perf_counter()
    impls = {"ours": setup_ours(cfg, video, labels, text)}
    log(f"{key}: ours built + inference compiled in {time.perf_counter() - start:.1f}s")
    if official is not None:
        log(f"{key}: building official" + (" and counting its FLOPs" if args.official_flops else ""))
        start = time.perf_counter()
        impls["official"] = setup_official(official, cfg, video, labels, text, args.official_flops)
        log(f"{key}: official built in {time.perf_counter() - start:.1f}s")
    times = {name: {"infer": [], "train": []} for name in impls}
    warm = {}
    for name, impl in impls.items():
        for kind in ("infer", "train"):
            start = time.perf_counter()
            timed(impl[kind], args.warmup)
            warm[f"{name}_{kind}_s"] = time.perf_counter() - start
            log(f"{key}: {name} {kind} warm-up x{args.warmup}"
                f"{' (incl. compilation)' if name == 'ours' and kind == 'train' else ''} {warm[f'{name}_{kind}_s']:.1f}s")
    for r in range(args.rounds):
        for name, impl in impls.items():
            for kind in ("infer", "train"):
                times[name][kind] += timed(impl[kind], args.iters)
            log(f"{key}: round {r + 1}/{args.rounds} {name}: infer {times[name]['infer'][-1]:.2f}s, "
                f"train {times[name]['train'][-1]:.2f}s, loss {impl['state'].get('loss', float('nan')):.4f}")
    rows = {}
    for name, kinds in times.items():
        rows[name] = {"infer": common.median_summary(kinds["infer"], batch, "clips_per_s"),
                      "train": common.median_summary(kinds["train"], batch, "clips_per_s"),
                      "last_loss": impls[name]["state"].get("loss"), "params": impls[name]["counts"],
                      "flops": impls[name]["flops"]}
    ratios = None
    if official is not None:
        ratios = {kind: rows["ours"][kind]["clips_per_s"] / rows["official"][kind]["clips_per_s"]
                  for kind in ("infer", "train")}
    return {"label": cfg["label"], "batch": batch, "frames": FRAMES, "image_size": IMG, "patch_size": PATCH,
            "vision": {"width": cfg["vision"][0], "layers": cfg["vision"][1]}, "embed_dim": cfg["embed"],
            "num_texts": NUM_TEXTS, "results": rows, "ratio_ours_over_official": ratios, "warmup_s": warm}


def _g(flops, batch, macs=True):
    return None if flops is None else flops / batch / 1e9 / (2 if macs else 1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print markdown tables, write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", default=os.environ.get("ILA_OFFICIAL"),
                        help="checkout of Francis-Rings/ILA, branch master (default: $ILA_OFFICIAL)")
    parser.add_argument("--configs", default="b16", help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--tiny", action="store_true", help="only the reduced config (same as --configs tiny)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step (1 or 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (ours, official)")
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per round, implementation and kind")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-official-flops", dest="official_flops", action="store_false",
                        help="skip torch's FlopCounterMode pass over the official forward")
    parser.add_argument("--loader-workers", default="0,2", help="worker_count values; empty: skip the loader")
    parser.add_argument("--loader-batch", type=int, default=2)
    parser.add_argument("--loader-batches", type=int, default=20, help="timed batches per worker_count")
    parser.add_argument("--loader-short-side", type=int, default=224, help="short side the source decodes at")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--omp-wait-policy", default="auto", choices=("auto", "active", "passive", "unset"),
                        help="OMP_WAIT_POLICY for torch, set before torch is imported (an environment value wins). "
                        "auto: PASSIVE when the 1-min load average is > 0.5 at the start")
    parser.add_argument("--note", default="", help="free text added to the markdown")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    keys = ["tiny"] if args.tiny else [k.strip() for k in args.configs.split(",") if k.strip()]
    for key in keys:
        if key not in CONFIGS:
            parser.error(f"unknown config {key!r}; choose from {', '.join(CONFIGS)}")
    workers = [int(w) for w in args.loader_workers.split(",") if w.strip()]

    t_start = time.perf_counter()
    load_start, busy_start = common.log_load_start()
    versions = {"jax": jax.__version__, "flax": __import__("flax").__version__, "optax": optax.__version__}
    omp_policy, torch_threads, torch_versions = common.start_torch(
        args.official, args.omp_wait_policy, args.torch_threads, load_start[0], "ILA_OFFICIAL")
    official = load_official(args.official) if args.official else None
    versions.update(torch_versions)

    configs = {key: bench_config(key, args.batch, official, args) for key in keys}
    loader = bench_loader(args.loader_batch, workers, args.loader_batches, args.loader_short_side) if workers else {}
    load_end = os.getloadavg()
    busy_end = busy_processes()
    # The load before the run says whether other jobs were running; the one after includes this benchmark itself.
    loaded = load_start[0] > 0.5
    backend = jax.default_backend()
    record = {
        "model": MODEL, "configs": configs, "loader": loader, "dtype": "float32", "spec": SPEC,
        "loader_setup": {"source": "video_direction_speed", "split": "train", "short_side": args.loader_short_side,
                         "crop": None, "transform": "make_video_transform(train=True, image_size=224)",
                         "batch": args.loader_batch},
        "optimizer": {"groups": official_param_groups(), "adamw": ADAMW, "schedule": "constant"},
        "official": os.path.abspath(args.official) if args.official else None,
        "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "backend": backend,
        "device": str(jax.devices()[0].device_kind), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads, "omp_wait_policy": omp_policy, "platform": platform.platform(),
        "versions": versions, "loadavg_start": load_start, "loadavg_end": load_end,
        "busy_processes_start": busy_start, "busy_processes_end": busy_end, "loaded_machine": loaded,
        "wall_s": time.perf_counter() - t_start, "note": args.note,
    }

    lines = [f"# ILA (K400, X-CLIP head): ours (jax.jit) vs official Francis-Rings/ILA (PyTorch eager), {backend}", ""]
    if loaded:
        lines += [(f"**Preliminary run on a loaded machine** (1-min load average {load_start[0]:.2f} before, "
                   f"{load_end[0]:.2f} after; other jobs running): absolute numbers are depressed and noisy; the "
                   "ratios are from the same run, alternating rounds, but still only indicative."), ""]
    lines += [
        (f"Random weights, float32, {FRAMES} frames x {IMG} px, batch {args.batch} clip(s), {NUM_TEXTS} cached class "
         f"text features (same random array on both sides). Inference: ours jitted forward, official `model.eval()` "
         f"+ `no_grad`. Train step: forward + CE + summed cosine losses + backward + AdamW (0.9, 0.98) of the "
         f"official groups message_ / temporal_ / mit only (everything else frozen); ours one jitted donated step. "
         f"Median of {args.rounds} x {args.iters} timed iterations in alternating rounds after {args.warmup} "
         f"warm-up."),
        "",
        (f"Machine: {os.cpu_count()} CPU cores ({record['cpu']}), "
         + (f"torch threads {torch_threads} (OMP_WAIT_POLICY {omp_policy or 'unset'})" if official else "torch not run")
         + f"; {record['platform']}; load average 1/5/15 min {load_start[0]:.2f} / {load_start[1]:.2f} / "
         f"{load_start[2]:.2f} before, {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} after (this "
         f"benchmark included); wall time {record['wall_s']:.0f} s."),
        "",
        ("| config | batch | ours infer clips/s | official infer clips/s | ratio | ours train clips/s | "
         "official train clips/s | ratio |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in configs.values():
        ours, ref, ratio = c["results"]["ours"], c["results"].get("official"), c["ratio_ours_over_official"] or {}
        lines.append(
            f"| {c['label']} | {c['batch']} | {ours['infer']['clips_per_s']:.3f} | "
            f"{fmt(ref and ref['infer']['clips_per_s'], '.3f')} | {fmt(ratio.get('infer'), '.2f')} | "
            f"{ours['train']['clips_per_s']:.3f} | {fmt(ref and ref['train']['clips_per_s'], '.3f')} | "
            f"{fmt(ratio.get('train'), '.2f')} |")
    lines += ["", "Medians (s per step; all timed values in the JSON):", "",
              ("| config | ours infer | official infer | ours train | official train | ours trainable params | "
               "official optimised params |"), "|---|---|---|---|---|---|---|"]
    for key, c in configs.items():
        ours, ref = c["results"]["ours"], c["results"].get("official")
        lines.append(
            f"| {key} | {ours['infer']['median_s']:.2f} | {fmt(ref and ref['infer']['median_s'], '.2f')} | "
            f"{ours['train']['median_s']:.2f} | {fmt(ref and ref['train']['median_s'], '.2f')} | "
            f"{ours['params']['trainable']:,} | {fmt(ref and ref['params']['optimised'], ',')} |")
    lines += [
        "", ("Cost per view (one clip of 8 frames). Ours: XLA cost analysis, all ops, flops / 2 reported as GMACs; "
             "official: torch FlopCounterMode (matmul/conv/attention), flops / 2 = GMACs."), "",
        ("| config | ours full forward GMACs (XLA flops/2) | ours visual + MIT GMACs | official full forward GMACs "
         "(FlopCounter) | official visual + MIT GMACs | spec measured visual + MIT (8 f) | spec slides (16 f; /2 for "
         "8 f) |"),
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in configs.items():
        b = c["batch"]
        of, rf = c["results"]["ours"]["flops"], (c["results"].get("official") or {}).get("flops") or {}
        slides = f"{SPEC['b16_16f_gflops_slides']:.0f} GFLOPs (147.5 at 8 f if linear)"
        spec_cells = (f"{SPEC['b16_8f_gmacs_measured']} GMACs", slides) if key == "b16" else ("–", "–")
        lines.append(
            f"| {key} | {fmt(_g(of.get('full_forward_flops'), b), '.1f')} | "
            f"{fmt(_g(of.get('features_flops'), b), '.1f')} | {fmt(_g(rf.get('full_forward_flops'), b), '.1f')} | "
            f"{fmt(_g(rf.get('features_flops'), b), '.1f')} | {spec_cells[0]} | {spec_cells[1]} |")
    if "b16" in configs:
        c = configs["b16"]
        ours_f = _g(c["results"]["ours"]["flops"].get("features_flops"), c["batch"])
        ref_f = _g(((c["results"].get("official") or {}).get("flops") or {}).get("features_flops"), c["batch"])
        spec = SPEC["b16_8f_gmacs_measured"]
        lines += ["", (f"B/16 x 8 frames, visual encoder + MIT, per view: ours {fmt(ours_f, '.1f')} GMACs (XLA flops / 2, "
                       f"{fmt(ours_f and ours_f / spec, '.3f')} x the spec's measured {spec}), official "
                       f"{fmt(ref_f, '.1f')} GMACs (FlopCounter, {fmt(ref_f and ref_f / spec, '.3f')} x). The slides' "
                       f"{SPEC['b16_16f_gflops_slides']:.0f} GFLOPs per view are for 16 frames (no 8-frame number); "
                       f"halved, 147.5 at 8 frames; ours is {fmt(ours_f and ours_f / 147.5, '.2f')} x that: the released "
                       f"code costs more than the slides say (spec section 1.1: 390.2 GMACs measured at 16 frames vs "
                       f"295).")]
    if loader:
        lines += ["", (f"Loader: `zoo.data.make_pipeline` over `video_direction_speed` (train split, frames at short "
                       f"side {args.loader_short_side}, full frames) with `make_video_transform(train=True, "
                       f"image_size=224)`, batch {args.loader_batch}, {args.loader_batches} timed batches after one "
                       f"warm-up batch; run alone. Ratio = loader clips/s / train-step clips/s "
                       f"({keys[0]}, batch {args.batch})."), "",
                  "| worker_count | loader clips/s | first batch s | / ours train clips/s | / official train clips/s |",
                  "|---|---|---|---|---|"]
        first = configs[keys[0]]["results"]
        for count, row in loader.items():
            ours_t = first["ours"]["train"]["clips_per_s"]
            ref_t = first["official"]["train"]["clips_per_s"] if "official" in first else None
            lines.append(f"| {count} | {row['clips_per_s']:.2f} | {row['first_batch_s']:.1f} | "
                         f"{row['clips_per_s'] / ours_t:.1f}x | "
                         f"{fmt(ref_t and row['clips_per_s'] / ref_t, '.1f')}{'x' if ref_t else ''} |")
    if official is None:
        lines += ["", "Official code not run (pass --official PATH or set ILA_OFFICIAL to compare)."]
    else:
        lines += ["", ("Official shims (runtime, from the script; fetched files unedited): official `models`/`utils`/"
                       "`clip` imported under private module names (they collide with ours), `clip` before "
                       "`models.xclip`; `XCLIP(...)` built directly; `cache_text` replaced by a function that returns "
                       "the cached features without its `eval()`/`train()` side effect; prompts frozen too "
                       "(`requires_grad=False`; officially trainable but never optimised); optimizer = official "
                       "`build_optimizer` with a stand-in config.")]
    lines += common.footer_lines(args.note, busy_start, busy_end, "ila.py", argv)
    common.write_results(args.out, f"ila_{backend}", record, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
