"""Helpers shared by the benchmark scripts: one AdamW train step and one inference call of a classifier (each
returns {"train": fn, "infer": fn}; each fn runs once and blocks until the result is ready), timing, logging,
what the machine was doing (CPU model, the busiest other processes), torch set-up for the official reference
code, the markdown / JSON results, and the skip-if-done training of the reduced-scale runs.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shlex
import statistics
import sys
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

import numpy as np


def log(message: str) -> None:
    """Print `message` with the time of day (progress of a long benchmark)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(fn, iters: int) -> list[float]:
    """Wall seconds of `iters` calls of `fn` (each call must block until its result is ready)."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def busy_processes(limit: int = 5) -> list[str]:
    """The other processes using the most CPU now ("%cpu command", from `ps`), to record what else was running."""
    import subprocess

    try:
        out = subprocess.run(["ps", "-eo", "pid=,pcpu=,args=", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        pid, pcpu, cmd = (line.split(None, 2) + ["", ""])[:3]
        if pid.isdigit() and int(pid) != os.getpid() and float(pcpu or 0) >= 5.0:
            rows.append(f"{float(pcpu):.0f}% {cmd[:100]}")
    return rows[:limit]


def apply_omp_wait_policy(choice: str, load_1min: float) -> str | None:
    """Set OMP_WAIT_POLICY for torch (before it is imported): "passive" / "active", or "auto" (PASSIVE when the
    1-minute load is above 0.5: libgomp's spin-waiting stalls when there are more runnable threads than cores),
    "unset" to leave it. An OMP_WAIT_POLICY already in the environment wins. Returns the policy in effect."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is None and choice != "unset" and (choice != "auto" or load_1min > 0.5):
        policy = "PASSIVE" if choice in ("auto", "passive") else "ACTIVE"
        os.environ["OMP_WAIT_POLICY"] = policy
    return policy


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def nnx_classifier_runners(model, optimizer, images: np.ndarray, labels: np.ndarray) -> dict:
    """`nnx.jit` train step (cross-entropy, `optimizer.update`) and eval-mode inference of an NNX classifier."""
    import jax.numpy as jnp
    import optax
    from flax import nnx

    x, y = jnp.asarray(images), jnp.asarray(labels)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            logits = model(x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def infer(model, x):
        return model(x, train=False)

    # cached_partial skips re-walking the object graph on every call (flax performance guide).
    train_step = nnx.cached_partial(train_step, model, optimizer)
    infer = nnx.cached_partial(infer, model)
    return {"train": lambda: train_step(x, y).block_until_ready(), "infer": lambda: infer(x).block_until_ready()}


def torch_classifier_runners(model, optimizer, images: np.ndarray, labels: np.ndarray) -> dict:
    """PyTorch eager train step (cross-entropy, backward, `optimizer.step`) and no-grad inference; NHWC inputs."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()

    def run_train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def run_infer():
        model.eval()
        with torch.no_grad():
            model(x)

    return {"train": run_train, "infer": run_infer}


def median_summary(times: list[float], batch: int, per_s: str = "images_per_s") -> dict:
    """Median seconds of `times`, the items per second at that median (`per_s`: the key) and the raw times."""
    median = statistics.median(times)
    return {"median_s": median, per_s: batch / median, "times_s": times}


def fmt(value, spec: str) -> str:
    """`format(value, spec)`, or "n/a" for a value the run did not measure (None)."""
    return "n/a" if value is None else format(value, spec)


def log_load_start() -> tuple[tuple[float, float, float], list[str]]:
    """The load average and the busy processes at the start of a run; logs the load average."""
    load_start = os.getloadavg()
    busy_start = busy_processes()
    log(f"load average before the run (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    return load_start, busy_start


def start_torch(official: str | None, omp_wait_policy: str, torch_threads: int, load_1min: float, env_var: str,
                extra_versions: tuple[str, ...] = ()) -> tuple[str | None, int | None, dict]:
    """Before the official code is loaded: set OMP_WAIT_POLICY (`apply_omp_wait_policy`), import torch and timm and
    set torch's threads, when `official` (the checkout) is given; otherwise log that only ours is measured.
    Returns (the OMP_WAIT_POLICY in effect, torch's thread count or None, the versions of torch, timm and the
    modules named in `extra_versions`)."""
    omp_policy = apply_omp_wait_policy(omp_wait_policy, load_1min) if official else os.environ.get("OMP_WAIT_POLICY")
    if not official:
        log(f"no --official (nor ${env_var}): measuring ours only, the reference column is skipped")
        return omp_policy, None, {}
    if "torch" in sys.modules:
        log("warning: torch was imported before OMP_WAIT_POLICY could be set")
    import timm
    import torch

    extra = {name: importlib.import_module(name) for name in extra_versions}
    torch.set_num_threads(torch_threads)
    threads = torch.get_num_threads()
    log(f"official: torch threads {threads}, OMP_WAIT_POLICY={omp_policy or 'unset'}")
    versions = {"torch": torch.__version__, "timm": timm.__version__}
    versions.update({name: module.__version__ for name, module in extra.items()})
    return omp_policy, threads, versions


def classifier_table(rows: dict) -> list[str]:
    """Markdown table of `summary` rows {implementation: {"train": ..., "infer": ...}} in images/s."""
    lines = [
        "| implementation | train step (s) | train images/s | inference (s) | inference images/s |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['train']['median_s']:.3f} | {row['train']['images_per_s']:.2f} | "
            f"{row['infer']['median_s']:.3f} | {row['infer']['images_per_s']:.2f} |"
        )
    return lines


def footer_lines(note: str, busy_start: list[str], busy_end: list[str], script: str,
                 argv: list[str] | None) -> list[str]:
    """The markdown's last lines: the note, the other busy processes at the start and the end, the command."""
    lines = []
    if note:
        lines += ["", f"Note: {note}"]
    if busy_start or busy_end:
        lines += ["", "Other processes using >= 5% CPU (ps, lifetime average), at the start: "
                  + ("; ".join(f"`{p}`" for p in busy_start) or "none")
                  + "; at the end: " + ("; ".join(f"`{p}`" for p in busy_end) or "none") + "."]
    lines += ["", f"Command: `python benchmarks/{script} " + shlex.join(argv if argv is not None else sys.argv[1:])
              + "`"]
    return lines


def write_results(out: str, stem: str, record: dict, table: str, say=log) -> None:
    """Print the markdown `table`, write `<out>/<stem>.json` (the record) and `<out>/<stem>.md` (the table) and
    `say` where they went."""
    print(table)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, stem)
    with open(path + ".json", "w") as handle:
        json.dump(record, handle, indent=2)
    with open(path + ".md", "w") as handle:
        handle.write(table)
    say(f"wrote {path}.json and {path}.md")


def train_unless_done(config, workdir: str, logger) -> dict:
    """The trainer's summary of the run in `workdir`: read from its `summary.json` when the run is done already,
    else from training `config` there (the trainer resumes a stopped run)."""
    summary_path = os.path.join(workdir, "summary.json")
    if os.path.exists(summary_path):
        logger.info("%s is done already (summary.json); skipping", workdir)
        with open(summary_path) as f:
            return json.load(f)
    from zoo.train.config import validate_config
    from zoo.train.trainer import Trainer

    validate_config(config)
    return Trainer(config, workdir).run()
