"""Orbax checkpoints of the zoo: one on-disk layout for the trainer and the converter.

    <dir>/checkpoints/<step>/model      nnx.state(model): params and batch stats
    <dir>/checkpoints/<step>/ema        (trainer, optional) EMA of the model state, used for eval when enabled
    <dir>/checkpoints/<step>/optimizer  (trainer) optimizer state
    <dir>/checkpoints/<step>/data_iter  (trainer) grain iterator state, JSON
    <dir>/checkpoints/<step>/meta       JSON: model_name, overrides, step, eval_uses_ema, metrics

`create_model(name, pretrained=<dir>)` reads the latest step of such a directory; the builder overrides saved in
`meta` are applied first, so a model trained with e.g. `num_classes=10` reloads without repeating them. A trainer
checkpoint written with `checkpoint_frozen=False` holds no frozen parameters: `create_model` loads those from the
run's `config.model.pretrained` (saved in `meta`) and the rest from the checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from flax import nnx

CHECKPOINT_SUBDIR = "checkpoints"


def _orbax():
    import orbax.checkpoint as ocp

    return ocp


def manager_root(path: str) -> str:
    """The CheckpointManager directory for a workdir, a manager directory, or a step directory."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
        return os.path.join(path, CHECKPOINT_SUBDIR)
    return path


def _find_step_dir(path: str) -> tuple[str, int | None]:
    """(manager root, step) for `path`; step None means `path` itself is a step directory."""
    if os.path.isdir(os.path.join(path, "model")):
        return path, None
    root = manager_root(path)
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit() and os.path.isdir(os.path.join(root, d)))
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint found in {path}: expected <dir>/checkpoints/<step>/model (written by train.py or "
            "python -m zoo.convert)"
        )
    return root, steps[-1]


def save_model(directory: str, model: nnx.Module, *, meta: dict[str, Any], step: int = 0) -> str:
    """Write `model` (and `meta`) as a one-step checkpoint under `directory`; returns the manager root."""
    ocp = _orbax()
    root = os.path.join(os.path.abspath(directory), CHECKPOINT_SUBDIR)
    with ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False)) as mgr:
        mgr.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
                meta=ocp.args.JsonSave(dict(meta, step=step)),
            ),
        )
        mgr.wait_until_finished()
    return root


def read_meta(path: str) -> dict[str, Any]:
    """The JSON metadata of the latest checkpoint under `path`."""
    ocp = _orbax()
    root, step = _find_step_dir(os.path.abspath(path))
    if step is None:
        return ocp.JsonCheckpointHandler().restore(os.path.join(root, "meta"))
    with ocp.CheckpointManager(root) as mgr:
        return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_model_state(path: str, abstract_state: nnx.State, *, item: str = "model") -> nnx.State:
    """Restore the `item` state of the latest checkpoint under `path` into the (possibly sharded) abstract state.

    Checkpoints hold `nnx.to_pure_dict` trees (plain nested dicts of arrays), independent of Variable metadata.
    """
    ocp = _orbax()
    root, step = _find_step_dir(os.path.abspath(path))
    target = nnx.to_pure_dict(abstract_state)
    try:
        if step is None:
            restored = ocp.StandardCheckpointer().restore(os.path.join(root, item), target)
        else:
            with ocp.CheckpointManager(root) as mgr:
                restored = mgr.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(target)}))[item]
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"checkpoint {path} does not fit the model (different variant or overrides?): {err}"
        ) from err
    state = jax.tree.map(lambda x: x, abstract_state)
    nnx.replace_by_pure_dict(state, restored)
    return state


def _load_without_frozen(entry, path: str, meta: dict[str, Any], item: str, *, rngs: nnx.Rngs,
                         overrides: dict[str, Any]) -> nnx.Module:
    """A checkpoint written with `checkpoint_frozen=False`: the frozen params (meta "frozen" regexes) come from the
    run's task (`Task.pretrained_source`, e.g. the MaskAlign teacher's checkpoint) or else its
    `config.model.pretrained`; the rest from the checkpoint."""
    config = meta.get("config") or {}
    task = _task_rebuilding_frozen(config)
    if task is not None:
        # The run's task knows where its frozen part comes from (e.g. the MaskAlign teacher's own checkpoint).
        from zoo.tasks.base import as_module

        model = as_module(task.build_pretrained(task.pretrained_source(), rngs))
        return _restore_trained(model, path, meta, item)
    source = (config.get("model") or {}).get("pretrained") or ""
    if not source:
        raise ValueError(
            f"checkpoint {path} was written with checkpoint_frozen=False: its frozen parameters "
            f"({', '.join(meta['frozen'])}) are not in it, and they come from the run's config.model.pretrained, "
            "which is empty. Train with checkpoint_frozen=True to reload such a model."
        )
    model = load_pretrained(entry, source, rngs=rngs, overrides=overrides)
    return _restore_trained(model, path, meta, item)


def _restore_trained(model: nnx.Module, path: str, meta: dict[str, Any], item: str) -> nnx.Module:
    """`model` with everything but its frozen params (meta "frozen" regexes) restored from the checkpoint at `path`."""
    from zoo.train.optim import trainable_filter

    graphdef, trained, frozen = nnx.split(model, nnx.Not(nnx.All(nnx.Param, nnx.Not(trainable_filter(meta["frozen"])))),
                                          ...)
    trained = restore_model_state(path, trained, item=item)
    return nnx.merge(graphdef, trained, frozen)


def _task_rebuilding_frozen(config: dict[str, Any]):
    """The run's task (from its saved config) when that task overrides `pretrained_source` (its frozen part has its
    own source) and names one; else None (the frozen params come from `config.model.pretrained`)."""
    import ml_collections

    from zoo.tasks import get_task
    from zoo.tasks.base import Task

    name = config.get("task")
    if not name:
        return None
    try:
        task_cls = get_task(name)
    except KeyError:
        return None
    if task_cls.pretrained_source is Task.pretrained_source:
        return None
    task = task_cls(ml_collections.ConfigDict(config))
    return task if task.pretrained_source() else None


def load_pretrained(entry, path: str, *, rngs: nnx.Rngs, overrides: dict[str, Any]) -> nnx.Module:
    """Build `entry`'s model and load weights from an orbax directory or an official checkpoint file."""
    if os.path.isdir(path):
        meta = read_meta(path)
        saved_name = meta.get("model_name")
        if saved_name and saved_name != entry.name:
            raise ValueError(f"checkpoint {path} holds model {saved_name!r}, not {entry.name!r}")
        kwargs = dict(meta.get("overrides") or {}, **overrides)
        # rngs goes in as an argument: a builder drawing from an Rngs captured by the closure mutates it across traces
        abstract = nnx.eval_shape(lambda r: entry.builder(rngs=r, **kwargs), rngs)
        item = "ema" if meta.get("eval_uses_ema") else "model"
        graphdef, abstract_state = nnx.split(abstract)
        if meta.get("checkpoint_frozen", True) or not meta.get("frozen"):
            state = restore_model_state(path, abstract_state, item=item)
            return nnx.merge(graphdef, state)
        return _load_without_frozen(entry, path, meta, item, rngs=rngs, overrides=overrides)
    if not os.path.exists(path):
        url = entry.cfg.url or "the model's README"
        raise FileNotFoundError(
            f"pretrained checkpoint {path!r} not found for {entry.name}. Official weights: {url}. Pass a local "
            "file (.pt/.pth/.safetensors) or an orbax directory written by train.py / python -m zoo.convert."
        )
    if entry.converter is None:
        raise ValueError(f"model {entry.name} has no converter for official checkpoints; pass an orbax directory")
    from zoo.convert import read_checkpoint

    checkpoint = read_checkpoint(path)
    abstract = nnx.eval_shape(lambda r: entry.builder(rngs=r, **overrides), rngs)
    model = entry.converter(checkpoint, abstract)
    jax.block_until_ready(nnx.state(model))
    return model
