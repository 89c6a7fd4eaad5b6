"""The Task contract: what a task supplies to the one trainer.

A task owns its model factory, loss and metrics, eval and data. The trainer owns the mesh, optimizer, jit, EMA,
checkpoints, logging and the loop; task-specific behaviour (Wild-GS densification, a frozen SAM2 encoder, the
MaskAlign teacher) enters through the hooks below, never as branches inside the trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx


class DataIterator(Protocol):
    """Host-local batches (dicts of numpy arrays) with a resumable, JSON-serialisable state."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class Task:
    """Base class of tasks; subclasses implement the methods that raise NotImplementedError."""

    #: Names of the config sections this task reads besides the trainer's own (for key validation).
    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # ---- model ---------------------------------------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """A fresh model (called under `nnx.eval_shape` and under jit: no side effects)."""
        raise NotImplementedError

    def model_name(self) -> str | None:
        """Registered name of the model (saved in checkpoint metadata so `create_model` can reload it)."""
        return None

    def model_overrides(self) -> dict[str, Any]:
        """Builder overrides of the model (saved in checkpoint metadata)."""
        return {}

    def layer_id(self, path: str) -> int:
        """Layer index of a parameter for layer-wise LR decay (0 = embeddings, num_layers + 1 = head)."""
        raise NotImplementedError(f"{type(self).__name__} does not define layer ids for layer-wise LR decay")

    def num_layers(self) -> int | None:
        """Number of layers for layer-wise LR decay, or None when the task has no such notion."""
        return None

    # ---- data ----------------------------------------------------------------------------------------------------
    def train_iterator(self, *, seed: int, process_index: int, process_count: int) -> DataIterator:
        """Infinite iterator of host-local training batches of size global_batch / process_count."""
        raise NotImplementedError

    def eval_batches(self, *, process_index: int, process_count: int) -> Iterable[dict[str, np.ndarray]]:
        """Host-local eval batches with a float "mask" entry (0 for padding); may be empty."""
        return ()

    def data_source(self, which: str):
        """The `zoo.data` source that `config.data[which]` ({name, split, kwargs}) names."""
        from zoo import data as data_lib

        spec = self.config.data[which]
        return data_lib.get_source(spec.name, split=spec.get("split", which), **dict(spec.get("kwargs", {}) or {}))

    def eval_pipeline(self, transform, *, process_index: int, process_count: int):
        """One padded pass over `config.data.eval` (padding rows have `_mask` False), or None without an eval set."""
        from zoo import data as data_lib

        data = self.config.data
        if not data.get("eval", None):
            return None
        return data_lib.make_pipeline(
            self.data_source("eval"),
            batch_size=int(data.get("eval_batch_size", 0) or self.config.batch_size),
            train=False,
            transform=transform,
            process_index=process_index,
            process_count=process_count,
        )

    def eval_batches_of(self, transform, keys: tuple[str, ...], *, valid_key: str = "mask", process_index: int,
                        process_count: int) -> Iterable[dict[str, np.ndarray]]:
        """`eval_pipeline` batches reduced to `keys`, plus the padding flag as float `valid_key` (1 real, 0 pad)."""
        from zoo import data as data_lib

        pipeline = self.eval_pipeline(transform, process_index=process_index, process_count=process_count)
        if pipeline is None:
            return ()
        return ({**{k: b[k] for k in keys}, valid_key: b[data_lib.MASK_KEY].astype(np.float32)} for b in pipeline)

    # ---- computation (traced under jit) ---------------------------------------------------------------------------
    def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(scalar loss, {metric name: scalar}) on one (micro)batch in training mode."""
        raise NotImplementedError

    def eval_sums(self, model: nnx.Module, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Masked sums over one eval batch; must include "count"."""
        raise NotImplementedError

    def summarize_eval(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Turn summed eval values into metrics (e.g. accuracy = correct / count)."""
        count = max(float(sums.get("count", 0.0)), 1.0)
        return {k: float(v) / count for k, v in sums.items() if k != "count"}

    # ---- hooks ----------------------------------------------------------------------------------------------------
    def on_step_end(self, trainer: Any, step: int) -> None:
        """Called on the host after every step (Wild-GS densification and the like)."""
