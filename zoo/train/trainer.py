"""The one trainer of the zoo.

    trainer = Trainer(config, workdir)      # task from config.task, or pass task=...
    summary = trainer.run()                 # trains, evaluates, checkpoints; resumes from workdir if possible

What it does, in order: mesh from `config.mesh`; model + optimizer created under jit directly into their shardings
(params carry NNX partition metadata, the `fsdp` axis is added by rule); restore the latest checkpoint in the workdir
(model, optimizer, EMA, data iterator) so a resumed run sees the same batches and reproduces the same losses; then a
`jax.jit` step with in/out shardings and donation, gradient accumulation by micro-batches, EMA, a NaN/Inf guard that
stops at the offending step (the last good checkpoint stays intact), periodic eval (top-1/top-5 for classification),
metrics to JSONL + TensorBoard, a progress bar, and checkpoints every N steps, at the end and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from zoo.tasks.base import Task, as_module
from zoo.train import mesh as mesh_lib
from zoo.train import optim
from zoo.train.metrics import MetricWriter, Progress

log = logging.getLogger("zoo.train")


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/Inf; the message names the step and the offending terms."""


class Interrupted(RuntimeError):
    """Training stopped by SIGTERM/SIGINT after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved")
        self.signum = signum
        self.step = step


def _global_batch(host_batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}


class Trainer:
    """Task-agnostic trainer driven by an ml_collections config (see configs/*.py for the keys)."""

    def __init__(
        self, config: ml_collections.ConfigDict, workdir: str, *, task: Task | None = None, devices=None
    ):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        if task is None:
            from zoo.tasks import get_task

            task = get_task(config.task)(config)
        self.task = task
        self.mesh = mesh_lib.make_mesh(dict(config.mesh), devices=devices)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        self.global_batch_size = int(config.batch_size)
        batch_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if self.global_batch_size % batch_shards:
            raise ValueError(
                f"batch_size {self.global_batch_size} is not divisible by the data x fsdp mesh size {batch_shards}"
            )
        self.accumulation_steps = int(config.optimizer.get("accumulation_steps", 1))
        if self.global_batch_size % (self.accumulation_steps * batch_shards):
            raise ValueError(
                f"batch_size {self.global_batch_size} must be divisible by accumulation_steps "
                f"{self.accumulation_steps} x {batch_shards} devices"
            )
        self.total_steps = int(config.num_train_steps)
        self.compute_dtype = jnp.dtype(config.get("dtype", "float32"))
        self._stop_signal: int | None = None
        self.step = 0
        from zoo.train.config import validate_config

        validate_config(config, type(task))
        self._build()

    # ------------------------------------------------------------------------------------------------------------------
    # Model, optimizer, shardings
    # ------------------------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        config = self.config
        layer_decay = bool(config.optimizer.get("layer_decay", 0.0))
        # Frozen parameters are outside the optimized set: no gradients, no optimizer state, only model state.
        self.frozen_patterns = tuple(config.optimizer.get("frozen", ()) or ())
        self.trainable = optim.trainable_filter(self.frozen_patterns)
        self.tx, self.schedule = optim.build_optimizer(
            config.optimizer,
            self.total_steps,
            layer_id_fn=self.task.layer_id if layer_decay else None,
            max_layer_id=self.task.max_layer_id() if layer_decay else None,
            mask_frozen=False,
        )
        seed = int(config.seed)
        pretrained = self.task.pretrained_source()
        trainable = self.trainable

        def create():
            rngs = nnx.Rngs(params=seed, dropout=seed + 1)
            model = as_module(self.task.build_model(rngs))
            optimizer = nnx.Optimizer(model, self.tx, wrt=trainable)
            return model, optimizer

        abstract_model, abstract_optimizer = nnx.eval_shape(create)
        self.graphdef, abstract_state = nnx.split((abstract_model, abstract_optimizer))
        self.model_graphdef = nnx.graphdef(abstract_model)
        # The jitted step sees plain nested dicts of arrays (nnx.to_pure_dict): their structure does not depend on
        # Variable metadata, which differs between abstract, eager and mesh-created states.
        self._set_abstract_state(abstract_state)
        if pretrained:
            # Loaded outside the mesh context: checkpoint restore targets need concrete shardings, not the abstract
            # mesh eval_shape sees under jax.set_mesh; device_put then lays the state out on the mesh.
            model = as_module(self.task.build_pretrained(pretrained, nnx.Rngs(params=seed, dropout=seed + 1)))
            optimizer = nnx.Optimizer(model, self.tx, wrt=trainable)
            self.state = jax.device_put(nnx.to_pure_dict(nnx.state((model, optimizer))), self.state_sharding)
        with jax.set_mesh(self.mesh):
            if not pretrained:
                self.state = jax.jit(lambda: nnx.to_pure_dict(nnx.state(create())), out_shardings=self.state_sharding)()
        # With checkpoint_frozen=False these entries of the model state are not saved (rebuilt from their source).
        self.checkpoint_frozen = bool(config.get("checkpoint_frozen", True))
        frozen_params = nnx.All(nnx.Param, nnx.Not(trainable))
        self._frozen_keys = {} if self.checkpoint_frozen else nnx.to_pure_dict(
            nnx.filter_state(abstract_state[0], frozen_params)
        )
        self.ema_decay = float(config.get("ema_decay", 0.0))
        # The EMA tracks what changes: trainable params and batch statistics (a frozen teacher is not copied).
        self._ema_keys = nnx.to_pure_dict(nnx.filter_state(abstract_state[0], nnx.Any(trainable, nnx.BatchStat)))
        self.ema_sharding = _subset(self.state_sharding[0], self._ema_keys) if self.ema_decay else None
        self.ema = self._copy_ema(self.state[0]) if self.ema_decay else None
        self.param_count = sum(
            int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract_model, nnx.Param))
        )
        self.trainable_param_count = sum(
            int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract_model, trainable))
        )
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()
        self._state_fns: dict[Any, Any] = {}

    def _set_abstract_state(self, abstract_state: nnx.State) -> None:
        """Template, shardings and abstract target of an (abstract) nnx.State of (model, optimizer)."""
        self._template = abstract_state
        self.state_sharding = nnx.to_pure_dict(
            mesh_lib.state_shardings(
                abstract_state, self.mesh, fsdp_min_size=int(self.config.get("fsdp_min_size", 2**14))
            )
        )
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            nnx.to_pure_dict(abstract_state),
            self.state_sharding,
        )

    def _state_fn(self, fn):
        # The template of the state fn receives (reshape_state swaps self._template for the new shapes).
        graphdef, template = self.graphdef, self._template

        def apply(state, *args):
            full = jax.tree.map(lambda x: x, template)
            nnx.replace_by_pure_dict(full, state)
            model, optimizer = nnx.merge(graphdef, full)
            result = fn(model, optimizer, *args)
            return nnx.state((model, optimizer)), result

        return apply

    def update_state(self, fn, *args):
        """Run `fn(model, optimizer, *args)` on the training state under jit, between steps; returns fn's result.

        `fn` changes the model and optimizer in place (NNX style: assign `variable.value`), keeping every shape and
        dtype (e.g. densification writing Gaussians into free slots and resetting their Adam moments). The jitted
        function is cached per `fn` object (pass the same function each time: arrays in `args` never recompile it);
        the state is donated and keeps its shardings. A task calls this from `on_step_end`.
        """
        jitted = self._state_fns.get(fn)
        if jitted is None:
            apply = self._state_fn(fn)

            def pure(state, *args):
                new_state, result = apply(state, *args)
                return nnx.to_pure_dict(new_state), result

            with jax.set_mesh(self.mesh):
                jitted = jax.jit(pure, out_shardings=(self.state_sharding, None), donate_argnums=0)
            self._state_fns[fn] = jitted
        new_state, result = jitted(self.state, *args)
        abstract = jax.tree.map(lambda x: (x.shape, x.dtype), self.abstract_state)
        if jax.tree.map(lambda x: (x.shape, x.dtype), new_state) != abstract:
            raise ValueError(f"update_state({getattr(fn, '__name__', fn)}) changed shapes or dtypes of the state; "
                             "use reshape_state for that")
        self.state = new_state
        return result

    def reshape_state(self, fn, *args):
        """Like `update_state`, but `fn` may change shapes (e.g. a Gaussian pool that doubles its capacity).

        The new state's shardings come from its NNX metadata as at the start; the train / eval steps and the cached
        `update_state` functions are rebuilt, so each compiles once more for the new shapes. Not supported with EMA
        (whose copy has the old shapes). Note that resuming such a run needs the task to build the model at the
        reshaped size.
        """
        if self.ema is not None:
            raise NotImplementedError("reshape_state with ema_decay > 0: the EMA copy cannot follow a shape change")
        apply = self._state_fn(fn)
        abstract_state, _ = jax.eval_shape(apply, self.state, *args)
        self._set_abstract_state(abstract_state)

        def pure(state, *args):
            new_state, result = apply(state, *args)
            return nnx.to_pure_dict(new_state), result

        with jax.set_mesh(self.mesh):
            new_state, result = jax.jit(pure, out_shardings=(self.state_sharding, None))(self.state, *args)
        self.state = new_state
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()
        self._state_fns = {}
        return result

    def _copy_ema(self, model_state: dict) -> dict:
        """A fresh copy of the EMA-tracked entries of `model_state`: the EMA and the live state are both donated to
        the step, so they must not share buffers."""
        copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=self.ema_sharding)
        return copy(_subset(model_state, self._ema_keys))

    def to_state(self, pure) -> nnx.State:
        """nnx.State of (model, optimizer) from the pure-dict form the trainer keeps."""
        state = jax.tree.map(lambda x: x, self._template)
        nnx.replace_by_pure_dict(state, pure)
        return state

    def _make_train_step(self):
        graphdef, task, tx_accum = self.graphdef, self.task, self.accumulation_steps
        ema_decay, trainable = self.ema_decay, self.trainable

        def loss_and_grads(model, batch):
            # Only the trainable params are differentiated; frozen ones ride along in `rest` as constants.
            params_graphdef, params, rest = nnx.split(model, trainable, ...)

            def loss_fn(params, rest, micro):
                # copy=True: fresh Variables at this (grad) trace level, so that train-mode state updates
                # (BatchNorm statistics, RNG counts) can be written; reusing the outer ones raises TraceContextError.
                local_model = nnx.merge(params_graphdef, params, rest, copy=True)
                loss, metrics = task.loss(local_model, micro)
                _, _, new_rest = nnx.split(local_model, trainable, ...)
                return loss, (dict(metrics, loss=loss), new_rest)

            if tx_accum == 1:
                (_, (metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, batch)
            else:
                micro_batches = jax.tree.map(
                    lambda x: x.reshape(x.shape[0] // tx_accum, tx_accum, *x.shape[1:]).swapaxes(0, 1), batch
                )

                def body(carry, micro):
                    grad_sum, rest, metric_sum = carry
                    (_, (metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, micro)
                    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
                    metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
                    return (grad_sum, rest, metric_sum), None

                first = jax.tree.map(lambda x: x[0], micro_batches)
                metric_shapes = jax.eval_shape(lambda: loss_fn(params, rest, first)[1][0])
                init = (
                    jax.tree.map(jnp.zeros_like, params),
                    rest,
                    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
                )
                (grad_sum, rest, metric_sum), _ = jax.lax.scan(body, init, micro_batches)
                grads = jax.tree.map(lambda g: g / tx_accum, grad_sum)
                metrics = jax.tree.map(lambda m: m / tx_accum, metric_sum)
            nnx.update(model, rest)
            return grads, metrics

        to_state, ema_keys = self.to_state, self._ema_keys

        def train_step(state, ema, batch):
            model, optimizer = nnx.merge(graphdef, to_state(state))
            model.train()
            grads, metrics = loss_and_grads(model, batch)
            # The task may read the gradients into model state (densification statistics) and change them.
            grads = task.process_gradients(model, grads, batch)
            metrics["grad_norm"] = optax_global_norm(grads)
            optimizer.update(model, grads)
            new_state = nnx.to_pure_dict(nnx.state((model, optimizer)))
            if ema is not None:
                tracked = _subset(new_state[0], ema_keys)
                ema = jax.tree.map(lambda e, p: (e * ema_decay + p * (1.0 - ema_decay)).astype(e.dtype), ema, tracked)
            return new_state, ema, metrics

        return jax.jit(
            train_step,
            in_shardings=(self.state_sharding, self.ema_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.ema_sharding, mesh_lib.replicated(self.mesh)),
            donate_argnums=(0, 1),
        )

    def _make_eval_step(self):
        model_graphdef, task = self.model_graphdef, self.task
        model_template = self._template[0]

        def eval_step(model_state, batch):
            state = jax.tree.map(lambda x: x, model_template)
            nnx.replace_by_pure_dict(state, model_state)
            model = nnx.merge(model_graphdef, state)
            model.eval()
            return task.eval_sums(model, batch)

        return jax.jit(eval_step, out_shardings=mesh_lib.replicated(self.mesh))

    # ------------------------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------------------------
    def _manager(self):
        import orbax.checkpoint as ocp

        config = self.config
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(config.get("keep_checkpoints", 2)),
            enable_async_checkpointing=bool(config.get("async_checkpointing", True)),
            create=True,
        )
        return ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"), options=options)

    def _meta(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model_name": self.task.model_name(),
            "overrides": self.task.model_overrides(),
            "step": self.step,
            "eval_uses_ema": bool(self.ema_decay),
            "frozen": list(self.frozen_patterns),
            "checkpoint_frozen": self.checkpoint_frozen,
            "config": json.loads(self.config.to_json_best_effort()),
            **(extra or {}),
        }

    def save(self, manager, iterator, *, extra_meta: dict[str, Any] | None = None) -> None:
        """Save model, optimizer, EMA, iterator state and metadata at the current step."""
        import orbax.checkpoint as ocp

        # "ema" holds the whole eval model state (EMA entries over the live ones), so that it loads like "model".
        items = {
            "model": ocp.args.StandardSave(_without(self.state[0], self._frozen_keys)),
            "optimizer": ocp.args.StandardSave(self.state[1]),
            "data_iter": ocp.args.JsonSave(iterator.get_state()),
            "meta": ocp.args.JsonSave(self._meta(extra_meta)),
        }
        if self.ema is not None:
            items["ema"] = ocp.args.StandardSave(_without(self.eval_model_state(), self._frozen_keys))
        manager.save(self.step, args=ocp.args.Composite(**items), force=True)

    def _restore(self, manager, iterator) -> bool:
        import orbax.checkpoint as ocp

        step = manager.latest_step()
        if step is None:
            return False
        abstract_model = _without(self.abstract_state[0], self._frozen_keys)
        abstract_optimizer = self.abstract_state[1]
        items = {
            "model": ocp.args.StandardRestore(abstract_model),
            "optimizer": ocp.args.StandardRestore(abstract_optimizer),
            "data_iter": ocp.args.JsonRestore(),
        }
        if self.ema is not None:
            items["ema"] = ocp.args.StandardRestore(abstract_model)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        # Frozen entries left out of the checkpoint keep the values just built from their source.
        self.state = {0: _overlay(self.state[0], restored["model"]), 1: restored["optimizer"]}
        if self.ema is not None:
            self.ema = _subset(restored["ema"], self._ema_keys)
        iterator.set_state(restored["data_iter"])
        self.step = int(step)
        log.info("resumed from %s at step %d", manager.directory, step)
        return True

    # ------------------------------------------------------------------------------------------------------------------
    # Eval
    # ------------------------------------------------------------------------------------------------------------------
    def eval_model_state(self):
        """The model state used for eval: the EMA when enabled (batch stats included), else the live model."""
        if self.ema is None:
            return self.state[0]
        return _overlay(self.state[0], self.ema)

    def eval_model(self) -> nnx.Module:
        """The eval model state (`eval_model_state`) as a module, e.g. for a task hook that exports it."""
        state = jax.tree.map(lambda x: x, self._template[0])
        nnx.replace_by_pure_dict(state, self.eval_model_state())
        return nnx.merge(self.model_graphdef, state)

    def evaluate(self) -> dict[str, float]:
        """Run the task's eval over its held-out batches; {} when the task has none."""
        sums: dict[str, float] = {}
        model_state = self.eval_model_state()
        for host_batch in self.task.eval_batches(
            process_index=jax.process_index(), process_count=jax.process_count()
        ):
            out = self._eval_step(model_state, _global_batch(host_batch, self.batch_sharding))
            for key, value in jax.device_get(out).items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return self.task.summarize_eval(sums) if sums else {}

    # ------------------------------------------------------------------------------------------------------------------
    # Loop
    # ------------------------------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        del frame
        self._stop_signal = signum

    def run(self) -> dict[str, Any]:
        """Train to `num_train_steps` (resuming if the workdir has a checkpoint); returns a summary dict."""
        config = self.config
        start_time = time.perf_counter()
        iterator = self.task.train_iterator(
            seed=int(config.seed), process_index=jax.process_index(), process_count=jax.process_count()
        )
        writer = MetricWriter(self.workdir)
        manager = self._manager()
        resumed = self._restore(manager, iterator)
        if jax.process_index() == 0:
            os.makedirs(self.workdir, exist_ok=True)
            with open(os.path.join(self.workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2))
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        progress = Progress(self.total_steps, self.step, examples_per_step=self.global_batch_size)
        log_every = int(config.get("log_every", 50))
        eval_every = int(config.get("eval_every", 0))
        checkpoint_every = int(config.get("checkpoint_every", 0))
        eval_metrics: dict[str, float] = {}
        try:
            while self.step < self.total_steps:
                if self._stop_signal is not None:
                    self.save(manager, iterator)
                    manager.wait_until_finished()
                    raise Interrupted(self._stop_signal, self.step)
                host_batch = next(iterator)
                batch = _global_batch(host_batch, self.batch_sharding)
                self.state, self.ema, metrics = self._train_step(self.state, self.ema, batch)
                self.step += 1
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
                if bad:
                    raise NonFiniteLossError(
                        f"non-finite values at step {self.step}: {bad}; stopping. The last good checkpoint in "
                        f"{manager.directory} (step {manager.latest_step()}) is intact."
                    )
                self.task.on_step_end(self, self.step)
                progress.update(self.step, {"loss": metrics["loss"]})
                if self.step % log_every == 0 or self.step == self.total_steps:
                    metrics["lr"] = float(self.schedule(self.step - 1))
                    metrics["examples_per_sec"] = progress.throughput
                    writer.write(self.step, metrics, prefix="train/")
                if (eval_every and self.step % eval_every == 0) or self.step == self.total_steps:
                    eval_metrics = self.evaluate()
                    if eval_metrics:
                        writer.write(self.step, eval_metrics, prefix="eval/")
                        log.info("step %d eval %s", self.step, eval_metrics)
                if (checkpoint_every and self.step % checkpoint_every == 0) or self.step == self.total_steps:
                    self.save(manager, iterator, extra_meta={"eval": eval_metrics})
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            progress.close()
            manager.wait_until_finished()
            manager.close()
            writer.close()
        wall = time.perf_counter() - start_time
        summary = {
            "step": self.step,
            "resumed": resumed,
            "wall_time_s": wall,
            "params": self.param_count,
            **{f"eval/{k}": v for k, v in eval_metrics.items()},
        }
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        return summary


def _subset(tree: dict, keys: dict) -> dict:
    """The entries of nested dict `tree` present in nested dict `keys`."""
    return {k: _subset(tree[k], v) if isinstance(v, dict) else tree[k] for k, v in keys.items()}


def _without(tree: dict, keys: dict) -> dict:
    """Nested dict `tree` without the entries present in nested dict `keys` (sections left empty are dropped)."""
    if not keys:
        return tree
    out = {}
    for k, v in tree.items():
        if k not in keys:
            out[k] = v
        elif isinstance(keys[k], dict) and isinstance(v, dict):
            rest = _without(v, keys[k])
            if rest:
                out[k] = rest
    return out


def _overlay(tree: dict, update: dict) -> dict:
    """`tree` with the entries of `update` replaced (nested dicts)."""
    out = dict(tree)
    for k, v in update.items():
        out[k] = _overlay(tree[k], v) if isinstance(v, dict) else v
    return out


def optax_global_norm(tree) -> jax.Array:
    """Global L2 norm of a gradient tree (f32)."""
    leaves = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros((), jnp.float32)

