"""MaskAlign pre-training step speed: ours (one `jax.jit` step) vs the official PyTorch code (eager), same CPU, same run.

    python benchmarks/maskalign.py --official /path/to/maskalign [--configs b16,reduced] [--rounds 3] [--iters 1]
    MASKALIGN_OFFICIAL=/path/to/maskalign python benchmarks/maskalign.py      # the same, path from the environment
    python benchmarks/maskalign.py                                            # ours only (no reference column)

`--official` is a checkout of https://github.com/OpenDriveLab/maskalign (e.g. `git archive HEAD | tar -x -C DIR`).
Nothing of it is copied into this repository: the directory is put on `sys.path` and `models_pretrain.py` is
imported at run time, unmodified. Compatibility shims, applied from outside (the fetched files are not edited):
- `np.float = np.float64` before the import (`util/pos_embed.py` uses `np.float`, removed in NumPy 1.24);
- `models_pretrain.Block` replaced by a wrapper around timm's `Block` that drops the `qk_scale` kwarg (gone from
  timm >= 0.9; the official always passes None, i.e. the default scale);
- `models_pretrain.CLIPVisionModel` replaced by a stand-in whose `from_pretrained(name)` builds a random-init
  `transformers.CLIPVisionModel(CLIPVisionConfig(...))` of the teacher's size (no download) with
  `attn_implementation="eager"`: the official forward asks for `output_attentions=True` and takes `attentions[-1]`;
  with the installed transformers (5.x) the default "sdpa" returns no attentions (an empty tuple, so the official
  forward would fail), and transformers 4.x, which the official code was written for, fell back to eager for
  `output_attentions` itself. So eager is the attention the official code runs with;
- for the reduced config only, `distill_heads` are rebuilt after construction as `nn.Linear(embed_dim,
  teacher_width)` with the official init (`_init_weights`): the official constructor hard-codes the target width 768
  / depth 12 from the teacher's name, so a narrower CLIP teacher would not match its heads.
The official optimizer is built as `main_pretrain.py` does: timm's weight-decay groups (no decay for 1-D parameters,
biases and `distill_weights`; only `requires_grad` ones, so not the CLIP teacher nor `pos_embed`) and
`torch.optim.AdamW(betas=(0.9, 0.95))`, weight decay 0.05. Its step is `model.train()`, forward (its loss),
backward, `optimizer.step()`, float32 (the official AMP autocast is a CUDA feature; off here), with
`torch.set_num_threads(os.cpu_count())` (`--torch-threads`). On a loaded machine (more runnable threads than cores)
libgomp's default spin-waiting makes torch's 2-thread barriers stall: the reduced step at batch 2 took 5-14 s
instead of 0.45 s with `OMP_WAIT_POLICY=PASSIVE` (measured here, load average 6). So `--omp-wait-policy auto`
(default) sets PASSIVE before torch is imported when the 1-min load average is > 0.5 at the start, and leaves the
default alone on an idle machine; the .md says which was used. An `OMP_WAIT_POLICY` in the environment wins.

Ours: `zoo.create_model("maskalign_vit_base_patch16_clip_b16", ...)` (README recipe: attention masking 0.7, linear
fusion, whitened targets, smooth-L1 on the top 5 layers, drop path 0.1); one jitted step does the teacher forward,
the attention-guided masking (from the model's own "mask" stream), the student forward/backward and an optax AdamW
(0.9, 0.95, wd 0.05 with the same no-decay set) update of the student / heads / DA only; parameters, optimizer state
and the model's RNG / buffer state are donated; the teacher's parameters are a separate, non-differentiated,
non-donated input.

Configs: `b16` = ViT-B/16 student + CLIP-B/16 teacher at 224 px, batch 8; `reduced` = student and teacher width 192,
depth 12, 3 heads, MLP 4x (768), patch 16, 224 px, batch 16 (`--batch-b16`, `--batch-reduced`). Also timed: the
teacher's forward alone (ours: jitted `model.teacher(images)`; official: `model.forward_clip(images)`, its CLIP
forward with `output_hidden_states` / `output_attentions`, under `no_grad`), reported as a share of the step time.
The implementations are timed in alternating rounds (ours, official) so that a change in machine load hits both;
numbers are medians over all timed iterations. Writes benchmarks/results/maskalign_<backend>.{json,md}. Timings
depend on the machine and its load: compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import zoo
from benchmarks import common
from benchmarks.common import busy_processes, cpu_model, fmt, log, timed
from zoo.train.optim import path_string, trainable_filter

MODEL = "maskalign_vit_base_patch16_clip_b16"
DROP_PATH = 0.1  # the README's ViT-B recipe
RECIPE = {"mask_ratio": 0.7, "mask_type": "attention", "fusion_type": "linear", "target_norm": "whiten",
          "loss_type": "smoothl1", "loss_weights": "top5", "head_type": "linear"}
LR, BETAS, WEIGHT_DECAY = 1.5e-4, (0.9, 0.95), 0.05
CONFIGS = {
    # student (embed_dim, depth, heads), teacher (width, layers, heads); both patch 16 at 224 px, MLP 4x.
    "b16": {"label": "B/16: ViT-B/16 student + CLIP-B/16 teacher", "student": (768, 12, 12),
            "teacher": (768, 12, 12)},
    "reduced": {"label": "reduced: width 192, depth 12, 3 heads (student and teacher)", "student": (192, 12, 3),
                "teacher": (192, 12, 3)},
}
IMG, PATCH = 224, 16


# --- ours ----------------------------------------------------------------------------------------------------------
def _decays(path: tuple, value) -> bool:
    """The official (timm `add_weight_decay`) decay set: not 1-D, not a bias, not `distill_weights` (so, unlike the
    zoo's default no-decay list, `cls_token` is decayed, as officially)."""
    name = path_string(path)
    return value.ndim > 1 and not name.endswith("bias") and name != "distill_weights"


def setup_ours(cfg: dict, images: np.ndarray) -> dict:
    """One jitted pre-training step (teacher, masking, student fwd/bwd, AdamW of the non-teacher params) and the
    jitted teacher forward alone."""
    (dim, depth, heads), (t_width, t_layers, t_heads) = cfg["student"], cfg["teacher"]
    model = zoo.create_model(
        MODEL, rngs=nnx.Rngs(0), embed_dim=dim, depth=depth, num_heads=heads, img_size=IMG, patch_size=PATCH,
        drop_path_rate=DROP_PATH, teacher_overrides={"width": t_width, "layers": t_layers, "heads": t_heads},
        **RECIPE,
    )
    trainable = trainable_filter((r"teacher\..*",))
    # trainable params | teacher params (frozen) | the rest (pos_embed buffer, RNG stream counters)
    graphdef, params, teacher_params, rest = nnx.split(model, trainable, nnx.Param, ...)
    decay_mask = jax.tree_util.tree_map_with_path(_decays, params)
    tx = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WEIGHT_DECAY, mask=decay_mask)
    opt_state = tx.init(params)
    x = jnp.asarray(images)

    def train_step(params, opt_state, rest, teacher_params, x):
        m = nnx.merge(graphdef, params, teacher_params, rest)

        def loss_fn(m):
            return m(x, train=True).loss  # mask drawn from the model's own "mask" stream, drop path from "dropout"

        # gradients of the trainable params only; the teacher is a constant of the differentiation
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(m)
        updates, opt_state = tx.update(grads, opt_state, params)
        _, _, _, new_rest = nnx.split(m, trainable, nnx.Param, ...)  # advanced RNG counters
        return optax.apply_updates(params, updates), opt_state, new_rest, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    teacher_def, teacher_state = nnx.split(model.teacher)  # the same (not donated) arrays as teacher_params
    teacher_fn = jax.jit(lambda state, x: nnx.merge(teacher_def, state)(x))
    state = {"params": params, "opt": opt_state, "rest": rest}

    def run_step():
        state["params"], state["opt"], state["rest"], loss = train_step(
            state["params"], state["opt"], state["rest"], teacher_params, x)
        loss.block_until_ready()
        state["loss"] = float(loss)

    def run_teacher():
        jax.block_until_ready(teacher_fn(teacher_state, x))

    counts = {
        "trainable": sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params)),
        "teacher": sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(teacher_params)),
    }
    return {"step": run_step, "teacher": run_teacher, "state": state, "counts": counts}


# --- official ------------------------------------------------------------------------------------------------------
def load_official(path: str):
    """Import the official `models_pretrain` from a checkout, with the shims of the module docstring."""
    if not os.path.isfile(os.path.join(path, "models_pretrain.py")):
        raise FileNotFoundError(f"{path}/models_pretrain.py not found: --official must be a checkout of "
                                "OpenDriveLab/maskalign")
    if not hasattr(np, "float"):
        np.float = np.float64  # util/pos_embed.py: np.arange(..., dtype=np.float)
    sys.path.insert(0, os.path.abspath(path))
    for name in [m for m in sys.modules if m == "util" or m.startswith("util.")]:
        del sys.modules[name]  # the official `util` package, not another one of that name
    import models_pretrain
    import timm.models.vision_transformer as timm_vit

    class Block(timm_vit.Block):
        """timm's Block without `qk_scale` (removed from timm >= 0.9; the official passes None = default scale)."""

        def __init__(self, *args, qk_scale=None, **kwargs):
            if qk_scale is not None:
                raise ValueError("qk_scale other than None is not supported by the installed timm")
            super().__init__(*args, **kwargs)

    models_pretrain.Block = Block
    return models_pretrain


def _random_clip_stand_in(width: int, layers: int, heads: int):
    """Replaces `models_pretrain.CLIPVisionModel`: `from_pretrained(name)` gives a random-init CLIPVisionModel of the
    openai/clip-vit-base-patch16 layout at the given size, eager attention (see the module docstring)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    class RandomCLIPVisionModel:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            config = CLIPVisionConfig(
                hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=IMG, patch_size=PATCH, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                attn_implementation="eager",
            )
            return CLIPVisionModel(config)

    return RandomCLIPVisionModel


def setup_official(module, cfg: dict, images: np.ndarray) -> dict:
    """The official MaskedAutoencoderViT in PyTorch eager: train step and its no-grad CLIP forward."""
    import timm.optim
    import torch
    from torch import nn

    (dim, depth, heads), (t_width, t_layers, t_heads) = cfg["student"], cfg["teacher"]
    module.CLIPVisionModel = _random_clip_stand_in(t_width, t_layers, t_heads)
    torch.manual_seed(0)
    kwargs = {k: v for k, v in RECIPE.items() if k != "mask_ratio"}
    model = module.MaskedAutoencoderViT(
        img_size=IMG, patch_size=PATCH, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=DROP_PATH,
        teacher_model="openai/clip-vit-base-patch16", **kwargs,
    )
    if model.distill_heads[0].out_features != t_width or len(model.distill_heads) != t_layers:
        # the constructor hard-codes 768 / 12 from the teacher's name: heads of the actual teacher's width
        model.distill_heads = nn.ModuleList([nn.Linear(dim, t_width) for _ in range(t_layers)])
        model.distill_heads.apply(model._init_weights)
    groups = timm.optim.param_groups_weight_decay(model, WEIGHT_DECAY, no_weight_decay_list=["distill_weights"])
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    state = {}

    def run_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, mask_ratio=RECIPE["mask_ratio"])
        loss.backward()
        optimizer.step()
        state["loss"] = float(loss.detach())

    def run_teacher():
        model.train()  # as inside the step (CLIP has no dropout at 0 rates; no_grad is the method's decorator)
        model.forward_clip(x)

    counts = {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "teacher": sum(p.numel() for p in model.clip_model.parameters()),
    }
    return {"step": run_step, "teacher": run_teacher, "state": state, "counts": counts}


# --- driver --------------------------------------------------------------------------------------------------------
def bench_config(key: str, batch: int, official, args) -> dict:
    cfg = CONFIGS[key]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, IMG, IMG, 3), dtype=np.float32)
    log(f"{key}: building ours (batch {batch})")
    impls = {"ours": setup_ours(cfg, images)}
    if official is not None:
        log(f"{key}: building official")
        impls["official"] = setup_official(official, cfg, images)
    times = {name: {"step": [], "teacher": []} for name in impls}
    for name, impl in impls.items():
        for kind in ("step", "teacher"):
            start = time.perf_counter()
            timed(impl[kind], args.warmup)
            log(f"{key}: {name} {kind} warm-up x{args.warmup}{' (incl. compilation)' if name == 'ours' else ''} "
                f"{time.perf_counter() - start:.1f}s")
    for r in range(args.rounds):
        for name, impl in impls.items():
            for kind in ("step", "teacher"):
                times[name][kind] += timed(impl[kind], args.iters)
            log(f"{key}: round {r + 1}/{args.rounds} {name}: step {times[name]['step'][-1]:.2f}s, "
                f"teacher {times[name]['teacher'][-1]:.2f}s, loss {impl['state'].get('loss', float('nan')):.4f}")
    rows = {}
    for name, kinds in times.items():
        step, teacher = common.median_summary(kinds["step"], batch), common.median_summary(kinds["teacher"], batch)
        rows[name] = {"step": step, "teacher": teacher, "teacher_share": teacher["median_s"] / step["median_s"],
                      "last_loss": impls[name]["state"].get("loss"), "params": impls[name]["counts"]}
    ratio = rows["ours"]["step"]["images_per_s"] / rows["official"]["step"]["images_per_s"] if official else None
    (dim, depth, heads), (t_width, t_layers, t_heads) = cfg["student"], cfg["teacher"]
    return {"label": cfg["label"], "batch": batch, "image_size": IMG, "patch_size": PATCH,
            "student": {"embed_dim": dim, "depth": depth, "num_heads": heads},
            "teacher": {"width": t_width, "layers": t_layers, "heads": t_heads},
            "results": rows, "ratio_ours_over_official": ratio}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a markdown table, write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", default=os.environ.get("MASKALIGN_OFFICIAL"),
                        help="checkout of OpenDriveLab/maskalign (default: $MASKALIGN_OFFICIAL)")
    parser.add_argument("--configs", default="b16,reduced", help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--batch-b16", type=int, default=8)
    parser.add_argument("--batch-reduced", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (ours, official)")
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per round, implementation and kind")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: "
                        "all cores)")
    parser.add_argument("--omp-wait-policy", default="auto", choices=("auto", "active", "passive", "unset"),
                        help="OMP_WAIT_POLICY for torch's OpenMP pool, set before torch is imported (an existing "
                        "environment value wins). auto: PASSIVE when the 1-min load average is > 0.5 at the start, "
                        "else unset (libgomp's spinning default)")
    parser.add_argument("--note", default="", help="free text added to the markdown (e.g. what else was running)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    for key in keys:
        if key not in CONFIGS:
            parser.error(f"unknown config {key!r}; choose from {', '.join(CONFIGS)}")

    load_start, busy_start = common.log_load_start()
    versions = {"jax": jax.__version__, "flax": __import__("flax").__version__, "optax": optax.__version__}
    omp_policy, torch_threads, torch_versions = common.start_torch(
        args.official, args.omp_wait_policy, args.torch_threads, load_start[0], "MASKALIGN_OFFICIAL",
        extra_versions=("transformers",))
    official = load_official(args.official) if args.official else None
    versions.update(torch_versions)

    batches = {"b16": args.batch_b16, "reduced": args.batch_reduced}
    configs = {key: bench_config(key, batches[key], official, args) for key in keys}
    load_end = os.getloadavg()
    busy_end = busy_processes()
    idle = load_start[0] < 0.5
    backend = jax.default_backend()
    record = {
        "model": MODEL, "configs": configs, "dtype": "float32", "drop_path_rate": DROP_PATH, "recipe": RECIPE,
        "optimizer": {"name": "adamw", "lr": LR, "betas": BETAS, "weight_decay": WEIGHT_DECAY,
                      "no_decay": "1-D params, biases, distill_weights"},
        "official_teacher_attention": "eager (transformers CLIPVisionModel)" if official else None,
        "official": os.path.abspath(args.official) if args.official else None,
        "rounds": args.rounds, "iters": args.iters, "warmup": args.warmup, "backend": backend,
        "device": str(jax.devices()[0].device_kind), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads, "omp_wait_policy": omp_policy, "platform": platform.platform(), "versions": versions,
        "loadavg_start": load_start, "loadavg_end": load_end,
        "busy_processes_start": busy_start, "busy_processes_end": busy_end, "machine_idle": idle, "note": args.note,
    }

    lines = [
        f"# MaskAlign pre-training step: ours (jax.jit) vs official OpenDriveLab/maskalign (PyTorch eager), {backend}",
        "",
    ]
    if not idle:
        lines += [(f"**Preliminary run on a loaded machine** (1-min load average {load_start[0]:.2f} before the "
                   "run, other jobs running): the absolute numbers are depressed and noisy; the ratios are from the "
                   "same run but still only indicative."), ""]
    lines += [
        (f"Full pre-training step (teacher forward + attention-guided masking at 0.7 + student forward/backward + "
         f"AdamW (0.9, 0.95), wd 0.05, of student / heads / DA), float32, drop path {DROP_PATH}, README recipe; median "
         f"of {args.rounds} x {args.iters} timed iterations in alternating rounds after {args.warmup} warm-up. "
         f"Teacher share = the teacher's forward alone / the step. Official CLIP teacher: random-init "
         f"transformers CLIPVisionModel, eager attention (needed for its `output_attentions`)."),
        "",
        (f"Machine: {os.cpu_count()} CPU cores ({record['cpu']}), "
         + (f"torch threads {torch_threads} (OMP_WAIT_POLICY {omp_policy or 'unset'})" if official else "torch not run")
         + f"; {record['device']}; "
         f"{record['platform']}; load average 1/5/15 min {load_start[0]:.2f} / {load_start[1]:.2f} / "
         f"{load_start[2]:.2f} before, {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} after (this "
         f"benchmark included); the machine was {'idle' if idle else 'not idle'} at the start."),
        "",
        ("| config | batch | ours img/s | official img/s | ratio ours/official | teacher share ours | "
         "teacher share official |"),
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in configs.items():
        ours, ref = c["results"]["ours"], c["results"].get("official")
        lines.append(
            f"| {c['label']} | {c['batch']} | {ours['step']['images_per_s']:.2f} | "
            f"{fmt(ref and ref['step']['images_per_s'], '.2f')} | {fmt(c['ratio_ours_over_official'], '.2f')} | "
            f"{ours['teacher_share']:.0%} | {fmt(ref and ref['teacher_share'], '.0%')} |"
        )
    lines += ["", "Step and teacher-forward medians (s):", "",
              "| config | ours step | ours teacher | official step | official teacher |", "|---|---|---|---|---|"]
    for key, c in configs.items():
        ours, ref = c["results"]["ours"], c["results"].get("official")
        lines.append(
            f"| {key} | {ours['step']['median_s']:.3f} | {ours['teacher']['median_s']:.3f} | "
            f"{fmt(ref and ref['step']['median_s'], '.3f')} | {fmt(ref and ref['teacher']['median_s'], '.3f')} |"
        )
    if official is None:
        lines += ["", "Official code not run (pass --official PATH or set MASKALIGN_OFFICIAL to compare)."]
    lines += common.footer_lines(args.note, busy_start, busy_end, "maskalign.py", argv)
    common.write_results(args.out, f"maskalign_{backend}", record, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
