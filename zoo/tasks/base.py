"""The Task contract: what a task supplies to the one trainer.

A task owns its model factory, loss and metrics, eval and data. The trainer owns the mesh, optimizer, jit, EMA,
checkpoints, logging and the loop; task-specific behaviour (Wild-GS densification, a frozen SAM2 encoder, the
MaskAlign teacher) enters through the hooks below, never as branches inside the trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

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


# The keys of a `zoo.data` source spec (`config.data.train`, `config.data.eval`); kwargs go to the source unchecked.
SOURCE_KEYS = {"name": None, "split": None, "kwargs": None}


class Modules(nnx.Module):
    """Several named modules trained together (a student and a frozen teacher): parameter paths are "<name>.<...>".

    `layer_id` / `max_layer_id` delegate to the sub-modules that define them, so layer-wise LR decay works on the
    trained part of a multi-module task.
    """

    def __init__(self, modules: Mapping[str, nnx.Module]):
        self.names = tuple(modules)
        for name, module in modules.items():
            setattr(self, name, module)

    def max_layer_id(self) -> int:
        """The largest `max_layer_id()` of the sub-modules that define layer ids."""
        ids = [getattr(self, n).max_layer_id() for n in self.names if hasattr(getattr(self, n), "max_layer_id")]
        if not ids:
            raise ValueError(f"none of the modules {self.names} defines layer ids (layer_id / max_layer_id)")
        return max(ids)

    def layer_id(self, path: str) -> int:
        """The sub-module's layer id of `path` ("student.blocks.3.mlp.fc1.kernel" -> student's id of "blocks.3...")."""
        name, _, rest = path.partition(".")
        module = getattr(self, name)
        if not hasattr(module, "layer_id"):
            raise ValueError(f"module {name!r} ({type(module).__name__}) defines no layer_id(path) for layer-wise LR "
                             "decay; freeze it or give it layer ids")
        return module.layer_id(rest)


def as_module(built: nnx.Module | Mapping[str, nnx.Module]) -> nnx.Module:
    """A task's `build_model` / `build_pretrained` result as one module (a dict of modules becomes `Modules`)."""
    if isinstance(built, Mapping):
        return Modules(built)
    return built


def merged_config_keys(task_cls: type) -> dict[str, Any]:
    """The config keys `task_cls` reads: the `config_keys` of every class in its MRO, merged (base classes first)."""

    def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, Mapping):
                if not isinstance(into.get(key), dict):
                    into[key] = {}
                merge(into[key], value)
            else:
                into[key] = None

    keys: dict[str, Any] = {}
    for cls in reversed(task_cls.__mro__):
        declared = vars(cls).get("config_keys")
        if declared:
            merge(keys, declared)
    return keys


class Task:
    """Base class of tasks; subclasses implement the methods that raise NotImplementedError.

    Strict configs: `config_keys` declares the config keys a task reads besides the trainer's own
    (`zoo.train.config.base_config()`), as a nested dict section -> {key: None (a value, not checked further) or a
    nested dict (a section whose keys are checked)}. A subclass declares only the keys it adds: the declarations of
    all classes in its MRO are merged. A key of a config file that neither the trainer nor the task declares is an
    error naming the closest valid key (`zoo.train.config.validate_config`).
    """

    config_keys: ClassVar[dict[str, Any]] = {
        "model": {"name": None, "overrides": None, "pretrained": None},
        "data": {"train": SOURCE_KEYS, "eval": SOURCE_KEYS, "eval_batch_size": None},
    }

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # ---- model ---------------------------------------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module | Mapping[str, nnx.Module]:
        """A fresh model (called under `nnx.eval_shape` and under jit: no side effects).

        One module, or a dict name -> module (a student and a frozen teacher) that the trainer wraps in `Modules`, so
        parameter paths start with the name ("teacher.blocks.0...", freeze it with `optimizer.frozen`). The default
        builds the registered model `model_name()` with `model_overrides()`.
        """
        name = self.model_name()
        if name is None:
            raise NotImplementedError(f"{type(self).__name__} must define build_model (or model_name)")
        import zoo

        return zoo.create_model(name, rngs=rngs, **self.model_overrides())

    def build_pretrained(self, pretrained: str, rngs: nnx.Rngs) -> nnx.Module | Mapping[str, nnx.Module]:
        """The model with weights from `pretrained` (`config.model.pretrained`: an orbax directory or an official
        checkpoint file), for fine-tuning; also the source of frozen weights that a checkpoint written with
        `checkpoint_frozen=False` leaves out. The default loads the registered model `model_name()`.
        """
        name = self.model_name()
        if name is None:
            raise NotImplementedError(
                f"{type(self).__name__} cannot load pretrained weights ({pretrained!r}): it has no registered "
                "model_name(); override build_pretrained(pretrained, rngs)"
            )
        import zoo

        return zoo.create_model(name, pretrained=pretrained, rngs=rngs, **self.model_overrides())

    def pretrained_source(self) -> str | None:
        """What the trainer loads a run from instead of the seeded init (passed to `build_pretrained`): by default
        `config.model.pretrained`; a task whose frozen part has its own checkpoint (the MaskAlign teacher) returns
        that too. None or "" -> the seeded init."""
        model = self.config.get("model", None)
        return (model.get("pretrained", None) if model is not None else None) or None

    def model_name(self) -> str | None:
        """Registered name of the model (saved in checkpoint metadata so `create_model` can reload it):
        `config.model.name`, or None without one (a task that builds its model itself)."""
        model = self.config.get("model", None)
        return (model.get("name", None) if model is not None else None) or None

    def model_overrides(self) -> dict[str, Any]:
        """Builder overrides of the model (saved in checkpoint metadata): `config.model.overrides` as plain values
        (nested ConfigDicts become dicts, so the metadata is JSON), plus `dtype` when `config.dtype` is not float32
        (bf16 compute, f32 params)."""
        model = self.config.get("model", None)
        overrides = (model.get("overrides", None) if model is not None else None) or {}
        overrides = overrides.to_dict() if isinstance(overrides, ml_collections.ConfigDict) else dict(overrides)
        if self.config.get("dtype", "float32") != "float32":
            overrides.setdefault("dtype", self.config.dtype)
        return overrides

    def abstract_model(self) -> nnx.Module:
        """The model built under `nnx.eval_shape` (no arrays allocated), cached: structure, paths, layer ids."""
        if getattr(self, "_abstract_model", None) is None:
            self._abstract_model = nnx.eval_shape(lambda: as_module(self.build_model(nnx.Rngs(0))))
        return self._abstract_model

    def layer_id(self, path: str) -> int:
        """Layer id of the parameter at dotted `path` for layer-wise LR decay, from the model's `layer_id(path)`
        (0 = embeddings, block i -> i + 1, `max_layer_id()` = head and everything after the blocks)."""
        model = self.abstract_model()
        if not hasattr(model, "layer_id"):
            raise ValueError(f"optimizer.layer_decay needs layer ids, but model {type(model).__name__} defines no "
                             "layer_id(path) / max_layer_id()")
        return int(model.layer_id(path))

    def max_layer_id(self) -> int:
        """The largest layer id (the head's): the model's `max_layer_id()` (num_blocks + 1 for a ViT)."""
        model = self.abstract_model()
        if not hasattr(model, "max_layer_id"):
            raise ValueError(f"optimizer.layer_decay needs layer ids, but model {type(model).__name__} defines no "
                             "layer_id(path) / max_layer_id()")
        return int(model.max_layer_id())

    def num_layers(self) -> int | None:
        """Number of blocks for layer-wise LR decay (`max_layer_id() - 1`), or None when the model has no layer ids."""
        model = self.abstract_model()
        return int(model.max_layer_id()) - 1 if hasattr(model, "max_layer_id") else None

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

    def train_pipeline(self, transform, *, seed: int, process_index: int, process_count: int, source=None,
                       **kwargs):
        """The shuffled, repeating host-sharded pipeline over `config.data.train` (or `source`) at the global batch
        size; `kwargs` go to `zoo.data.make_pipeline` (batch_transform, worker_count, ...)."""
        from zoo import data as data_lib

        return data_lib.make_pipeline(
            source if source is not None else self.data_source("train"),
            batch_size=int(self.config.batch_size),
            train=True,
            transform=transform,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            **kwargs,
        )

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
    def process_gradients(self, model: nnx.Module, grads: nnx.State, batch: Mapping[str, jax.Array]) -> nnx.State:
        """Traced inside the train step, after the gradients of the trainable parameters and before the optimizer
        update: may record them into the model's non-parameter state (Gaussian splatting's densification statistics
        come from a gradient) and returns the gradients the optimizer applies (same structure). Default: unchanged."""
        del model, batch
        return grads

    def on_step_end(self, trainer: Any, step: int) -> None:
        """Called on the host after every step (Wild-GS densification and the like). To change the parameters or
        the optimizer state between steps, call `trainer.update_state(fn, *args)` (shapes kept) or
        `trainer.reshape_state(fn, *args)` (shapes change)."""
