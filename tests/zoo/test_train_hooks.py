"""Trainer hooks that let a task touch the state: `Task.process_gradients` (inside the step) and
`Trainer.update_state` / `Trainer.reshape_state` (between steps), as Gaussian-splatting densification uses them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.tasks.base import Task
from zoo.train.config import base_config
from zoo.train.trainer import Trainer

ONE = jax.devices()[:1]  # batch size 1


class Counter(nnx.Variable):
    """Non-parameter state written by the gradient hook."""


class Toy(nnx.Module):
    def __init__(self, size: int = 4):
        self.w = nnx.Param(jnp.arange(1.0, size + 1.0))
        self.probe = nnx.Param(jnp.zeros((size,)))
        self.seen = Counter(jnp.zeros((size,)))


class Batches:
    """c = step + 1 broadcast to [1, 8]: the probe's gradient at each step is known."""

    def __init__(self):
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.step += 1
        return {"c": np.full((1, 8), float(self.step), np.float32)}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = int(state["step"])


class ToyTask(Task):
    """loss = 0.5 |w|^2 + sum(probe * c): the probe's gradient is c, recorded by the hook and then zeroed."""

    def __init__(self, config, reshape_at: int | None = None):
        super().__init__(config)
        self.reshape_at = reshape_at
        self.steps_seen: list[int] = []

    def build_model(self, rngs):
        return Toy()

    def train_iterator(self, *, seed, process_index, process_count):
        return Batches()

    def loss(self, model, batch):
        loss = 0.5 * jnp.sum(model.w.value**2) + jnp.sum(
            model.probe.value * batch["c"][0, : model.probe.value.shape[0]]
        )
        return loss, {}

    def process_gradients(self, model, grads, batch):
        probe = grads["probe"]
        value = probe.get_value() if isinstance(probe, nnx.Variable) else probe
        model.seen.value = model.seen.value + value
        zero = jnp.zeros_like(value)
        grads["probe"] = probe.replace(zero) if isinstance(probe, nnx.Variable) else zero
        return grads

    def on_step_end(self, trainer, step):
        self.steps_seen.append(step)
        if step == self.reshape_at:
            trainer.reshape_state(_grow_to(8))


def _grow_to(size: int):
    def grow(model, optimizer):
        for name in ("w", "probe"):
            variable = getattr(model, name)
            variable.value = jnp.concatenate([variable.value, jnp.zeros((size - variable.value.shape[0],))])
        model.seen.value = jnp.concatenate([model.seen.value, jnp.zeros((size - model.seen.value.shape[0],))])
        state = nnx.state(optimizer, nnx.optimizer.OptState)
        pad = lambda x: x if x.ndim == 0 else jnp.concatenate([x, jnp.zeros((size - x.shape[0],), x.dtype)])
        nnx.update(optimizer, jax.tree.map(pad, state))

    return grow


def _config(steps: int):
    config = base_config()
    config.task = "toy"
    config.batch_size = 1
    config.num_train_steps = steps
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.0
    config.optimizer.lr = 0.1
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.async_checkpointing = False
    config.log_every = 1
    return config


def _model_state(trainer):
    return jax.device_get(trainer.state[0])


def test_process_gradients_records_and_replaces_gradients(tmp_path):
    trainer = Trainer(_config(3), str(tmp_path), task=ToyTask(_config(3)), devices=ONE)
    trainer.run()
    state = _model_state(trainer)
    # c = 1, 2, 3: the hook saw the probe's true gradients, and the zeroed gradient left the probe where it was.
    np.testing.assert_array_equal(state["seen"], np.full(4, 6.0))
    np.testing.assert_array_equal(state["probe"], np.zeros(4))
    # w followed plain SGD on 0.5 |w|^2: w <- 0.9 w, three times.
    np.testing.assert_allclose(state["w"], np.arange(1.0, 5.0) * 0.9**3, rtol=1e-6)


def test_update_state_rewrites_params_and_optimizer_without_recompiling(tmp_path):
    config = _config(1)
    config.optimizer.name = "adamw"
    trainer = Trainer(config, str(tmp_path), task=ToyTask(config), devices=ONE)
    trainer.run()

    def set_w(model, optimizer, value):
        model.w.value = jnp.full_like(model.w.value, value)
        state = nnx.state(optimizer, nnx.optimizer.OptState)
        nnx.update(optimizer, jax.tree.map(lambda x: x if x.ndim == 0 else jnp.zeros_like(x), state))
        return jnp.sum(model.w.value)

    assert float(trainer.update_state(set_w, jnp.float32(2.0))) == 8.0
    assert float(trainer.update_state(set_w, jnp.float32(3.0))) == 12.0
    assert trainer._state_fns[set_w]._cache_size() == 1  # new argument values, same compiled function
    np.testing.assert_array_equal(_model_state(trainer)["w"], np.full(4, 3.0))
    moments = [x for x in jax.tree.leaves(jax.device_get(trainer.state[1])) if np.ndim(x)]
    assert moments and all(not np.any(m) for m in moments)

    def bad(model, optimizer):
        model.w.value = jnp.zeros((5,))

    with pytest.raises(ValueError, match="reshape_state"):
        trainer.update_state(bad)


def test_reshape_state_changes_shapes_and_training_continues(tmp_path):
    config = _config(4)
    task = ToyTask(config, reshape_at=2)
    trainer = Trainer(config, str(tmp_path), task=task, devices=ONE)
    trainer.run()
    state = _model_state(trainer)
    assert task.steps_seen == [1, 2, 3, 4]
    assert state["w"].shape == (8,) and state["seen"].shape == (8,)
    # Steps 3 and 4 ran on the grown state: the first 4 entries decayed 4 times, the padded ones stayed at 0;
    # the hook saw c = 1..4 in the first 4 entries and c = 3, 4 in the new ones.
    np.testing.assert_allclose(state["w"][:4], np.arange(1.0, 5.0) * 0.9**4, rtol=1e-6)
    np.testing.assert_array_equal(state["w"][4:], np.zeros(4))
    np.testing.assert_array_equal(state["seen"], np.array([10.0] * 4 + [7.0] * 4))
    assert trainer.abstract_state[0]["w"].shape == (8,)
