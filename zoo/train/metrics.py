"""Metric writers (JSONL + TensorBoard event files) and the progress bar.

CLU's writers import TensorFlow; these use only `tensorboardX`. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import jax


class MetricWriter:
    """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard event files in `<workdir>/tb/`."""

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)  # noqa: SIM115 (closed in close())
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        except ImportError:  # tensorboardX is a dependency; keep training if an environment lacks it
            self._tb = None

    def write(self, step: int, scalars: Mapping[str, float], *, prefix: str = "") -> None:
        """Record `scalars` at `step` (keys get `prefix`, e.g. "eval/")."""
        if not self.enabled:
            return
        row = {"step": int(step), "time": time.time()}
        for key, value in scalars.items():
            value = float(value)
            row[prefix + key] = value if math.isfinite(value) else str(value)
            if self._tb is not None:
                self._tb.add_scalar(prefix + key, value, int(step))
        self._jsonl.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Flush and close the files."""
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """Rows of metrics.jsonl; for a step written twice (a resumed run that redid it) the last row wins."""
    rows: dict[tuple[int, tuple[str, ...]], dict] = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            rows[(row["step"], tuple(sorted(k for k in row if k not in ("step", "time"))))] = row
    return sorted(rows.values(), key=lambda r: r["step"])


class Progress:
    """A tqdm progress bar with ETA and images/s on an interactive terminal; periodic log lines otherwise."""

    def __init__(self, total: int, initial: int, *, examples_per_step: int, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.examples_per_step = examples_per_step
        self.total = total
        self._bar = None
        self._last_time = time.perf_counter()
        self._last_step = initial
        self._throughput = 0.0
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
            )

    def update(self, step: int, scalars: Mapping[str, float] | None = None) -> None:
        """Advance the bar to `step`, showing `scalars` (e.g. loss) and images/s."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_time >= 1.0 or step == self.total:
            self._throughput = (step - self._last_step) * self.examples_per_step / max(now - self._last_time, 1e-9)
            self._last_time, self._last_step = now, step
        postfix = {k: f"{float(v):.4g}" for k, v in (scalars or {}).items()}
        postfix["img/s"] = f"{self._throughput:.1f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    @property
    def throughput(self) -> float:
        """Examples per second over the last interval."""
        return self._throughput

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
