"""Helpers shared by the benchmark scripts: one AdamW train step and one inference call of a classifier (each
returns {"train": fn, "infer": fn}; each fn runs once and blocks until the result is ready), timing, logging and
what the machine was doing (CPU model, the busiest other processes).
"""

from __future__ import annotations

import os
import platform
import time

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
