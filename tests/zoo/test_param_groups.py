"""Parameter groups (per-group LR / schedule / decay), the exponential schedule, frozen modules without optimizer
state, multi-module tasks (student + frozen teacher), `checkpoint_frozen=False`, and layer ids from the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from zoo.tasks.base import Modules, Task
from zoo.train import optim
from zoo.train.config import base_config


def _optimizer_config(**kwargs):
    base = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "no_decay": (),
            "frozen": (), "groups": ()}  # fmt: skip
    base.update(kwargs)
    return ml_collections.ConfigDict(base)


def _params():
    return {"embed": {"kernel": jnp.full((3, 4), 0.5)}, "blocks": {0: {"kernel": jnp.full((4, 4), 0.5)},
            1: {"kernel": jnp.full((4, 4), 0.5)}}, "head": {"kernel": jnp.full((4, 2), 0.5)}}  # fmt: skip


def _first_update(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def _ratio(updates, a, b) -> float:
    """max |update| of the parameter at path a over that at path b."""
    return float(jnp.abs(_get(updates, a)).max()) / float(jnp.abs(_get(updates, b)).max())


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_groups_scale_updates_by_their_lr(name):
    # SGD without momentum: update = -lr * grad; Adam's first step: update = -lr * grad / (|grad| + eps) ~ -lr * sign.
    groups = ({"pattern": r"head\..*", "lr": 0.5}, {"pattern": r"blocks\.1\..*", "lr_mult": 0.01},
              {"pattern": r"blocks\..*", "lr": 0.02})  # fmt: skip
    tx, schedule = optim.build_optimizer(_optimizer_config(name=name, groups=groups, eps=1e-12), 10)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    updates = _first_update(tx, params, grads)
    default = _get(updates, ("embed", "kernel"))
    # The expected magnitude per unit lr: 0.3 for SGD, 1 for Adam. Adam's bias correction divides by 1 - b2 = 1e-3
    # computed in float32, which carries a relative error up to eps32 / 1e-3; the ratios below cancel it.
    per_lr = 0.3 if name == "sgd" else 1.0
    rtol = 1e-6 if name == "sgd" else 4 * float(np.finfo(np.float32).eps) / (1 - 0.999)
    np.testing.assert_allclose(np.abs(default), 0.1 * per_lr, rtol=rtol)
    assert _ratio(updates, ("head", "kernel"), ("embed", "kernel")) == pytest.approx(5.0, rel=1e-5)
    assert _ratio(updates, ("blocks", 1, "kernel"), ("embed", "kernel")) == pytest.approx(0.01, rel=1e-5)  # first wins
    assert _ratio(updates, ("blocks", 0, "kernel"), ("embed", "kernel")) == pytest.approx(0.2, rel=1e-5)
    assert float(schedule(3)) == pytest.approx(0.1)  # the logged lr is the default group's


def test_group_weight_decay_and_schedule():
    groups = ({"pattern": r"head\..*", "weight_decay": 0.0, "schedule": "warmup_linear", "warmup_steps": 4},)
    tx, _ = optim.build_optimizer(_optimizer_config(weight_decay=1.0, groups=groups), 10)
    params = _params()
    updates = _first_update(tx, params, jax.tree.map(jnp.zeros_like, params))  # zero gradients: only decay moves
    assert float(jnp.abs(updates["embed"]["kernel"]).max()) == pytest.approx(0.1 * 0.5, rel=1e-6)
    assert float(jnp.abs(updates["head"]["kernel"]).max()) == 0.0
    with pytest.raises(ValueError, match="unknown keys"):
        optim.build_optimizer(_optimizer_config(groups=({"pattern": "x", "lr_mul": 2.0},)), 10)
    with pytest.raises(ValueError, match="both lr and lr_mult"):
        optim.build_optimizer(_optimizer_config(groups=({"pattern": "x", "lr": 1.0, "lr_mult": 2.0},)), 10)


def test_exponential_schedule_endpoints():
    lr, lr_final, steps = 1.6e-4, 1.6e-6, 30000
    _, schedule = optim.build_optimizer(_optimizer_config(lr=lr, schedule="exponential", lr_final=lr_final), steps)
    assert float(schedule(0)) == pytest.approx(lr, rel=1e-5)
    assert float(schedule(steps // 2)) == pytest.approx((lr * lr_final) ** 0.5, rel=1e-4)  # log-linear: geometric mean
    assert float(schedule(steps)) == pytest.approx(lr_final, rel=1e-4)
    assert float(schedule(2 * steps)) == pytest.approx(lr_final, rel=1e-4)  # holds after the run
    warm = optim.build_schedule({"lr": lr, "schedule": "exponential", "lr_final": lr_final, "warmup_steps": 10}, 110)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(lr, rel=1e-5)
    assert float(warm(110)) == pytest.approx(lr_final, rel=1e-4)
    with pytest.raises(ValueError, match="lr_final > 0"):
        optim.build_schedule({"lr": lr, "schedule": "exponential"}, 10)


def test_clip_norm_is_global_over_groups_and_layer_decay_composes():
    groups = ({"pattern": r"head\..*", "lr_mult": 2.0},)
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    tx, _ = optim.build_optimizer(_optimizer_config(lr=1.0, clip_norm=1.0, groups=groups), 10)
    updates = _first_update(tx, params, grads)
    count = sum(x.size for x in jax.tree.leaves(params))
    unit = 1.0 / count**0.5  # each clipped gradient entry when the global norm is 1
    assert float(updates["embed"]["kernel"][0, 0]) == pytest.approx(-unit, rel=1e-5)
    assert float(updates["head"]["kernel"][0, 0]) == pytest.approx(-2 * unit, rel=1e-5)

    def layer_id_fn(path: str) -> int:
        first = path.split(".")[0]
        return int(path.split(".")[1]) + 1 if first == "blocks" else {"embed": 0, "head": 3}[first]

    tx, _ = optim.build_optimizer(_optimizer_config(layer_decay=0.5, groups=groups), 10, layer_id_fn=layer_id_fn,
                                  max_layer_id=3)  # fmt: skip
    updates = _first_update(tx, params, jax.tree.map(jnp.ones_like, params))
    assert _ratio(updates, ("head", "kernel"), ("blocks", 1, "kernel")) == pytest.approx(2 * 2.0, rel=1e-5)
    assert _ratio(updates, ("blocks", 1, "kernel"), ("embed", "kernel")) == pytest.approx(4.0, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# A tiny model with layer ids and a distillation task: student trained, teacher frozen
# ----------------------------------------------------------------------------------------------------------------------


class TinyNet(nnx.Module):
    """embed -> blocks -> head, with the layer-id protocol of the zoo's backbones."""

    def __init__(self, rngs: nnx.Rngs, depth: int = 2, dim: int = 8):
        self.embed = nnx.Linear(3, dim, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(dim, dim, rngs=rngs) for _ in range(depth)])
        self.head = nnx.Linear(dim, 2, rngs=rngs)

    def __call__(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = x + jnp.tanh(block(x))
        return self.head(x)

    def max_layer_id(self) -> int:
        return len(self.blocks) + 1

    def layer_id(self, path: str) -> int:
        parts = path.split(".")
        if parts[0] == "embed":
            return 0
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        return self.max_layer_id()


class NoLayerIds(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)


class _Iterator:
    def __init__(self, batch_size: int, seed: int):
        self.batch_size, self.seed, self.step = batch_size, seed, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng((self.seed, self.step))
        self.step += 1
        return {"x": rng.normal(size=(self.batch_size, 3)).astype(np.float32)}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = int(state["step"])


class DistillTask(Task):
    """Student regresses onto a frozen teacher's outputs."""

    config_keys = {"data": {"dim": None}}  # noqa: RUF012

    def build_model(self, rngs):
        return {"student": TinyNet(rngs), "teacher": TinyNet(rngs, depth=3)}

    def train_iterator(self, *, seed, process_index, process_count):
        return _Iterator(int(self.config.batch_size), seed)

    def loss(self, model, batch):
        target = model.teacher(batch["x"])
        return jnp.mean(jnp.square(model.student(batch["x"]) - target)), {}


def _distill_config(**updates):
    config = base_config()
    config.data = ml_collections.ConfigDict({"dim": 8})
    config.batch_size, config.num_train_steps, config.log_every = 4, 2, 1
    config.mesh = {"data": 1, "fsdp": 1, "model": 1}
    config.async_checkpointing = False
    config.optimizer.frozen = (r"teacher\..*",)
    config.optimizer.lr = 1e-2
    config.optimizer.schedule = "constant"  # a resumed run with more steps sees the same lr
    config.update_from_flattened_dict(updates)
    return config


def _params_of(trainer, prefix):
    params = nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param))
    return jax.device_get(params[prefix])


def _size(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def test_frozen_teacher_has_no_optimizer_state_and_stays_fixed(tmp_path):
    from zoo.train.trainer import Trainer

    config = _distill_config()
    task = DistillTask(config)
    trainer = Trainer(config, str(tmp_path), task=task, devices=jax.devices()[:1])
    student_size = _size(_params_of(trainer, "student"))
    assert trainer.trainable_param_count == student_size < trainer.param_count
    # Adam keeps two moments per trainable value plus scalar step counts; nothing for the teacher.
    paths = ["/".join(map(str, path)) for path, _ in jax.tree_util.tree_flatten_with_path(trainer.state[1])[0]]
    assert not [p for p in paths if "teacher" in p]
    scalars = sum(1 for x in jax.tree.leaves(trainer.state[1]) if np.size(x) == 1)
    assert _size(trainer.state[1]) == 2 * student_size + scalars
    before_teacher, before_student = _params_of(trainer, "teacher"), _params_of(trainer, "student")
    trainer.run()
    for a, b in zip(jax.tree.leaves(before_teacher), jax.tree.leaves(_params_of(trainer, "teacher")), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before_student),
                                                          jax.tree.leaves(_params_of(trainer, "student")))]
    assert min(moved) > 0


def test_checkpoint_frozen_false_leaves_the_teacher_out_and_resumes(tmp_path):
    import orbax.checkpoint as ocp

    from zoo.train.trainer import Trainer

    config = _distill_config(checkpoint_frozen=False, ema_decay=0.5)
    Trainer(config, str(tmp_path), task=DistillTask(config), devices=jax.devices()[:1]).run()
    for item in ("model", "ema"):
        saved = ocp.StandardCheckpointer().metadata(str(tmp_path / "checkpoints" / "2" / item))
        tree = getattr(saved, "item_metadata", saved)
        tree = getattr(tree, "tree", tree)
        assert "student" in tree and "teacher" not in tree, item

    reference = _distill_config(num_train_steps=4, ema_decay=0.5)
    ref_trainer = Trainer(reference, str(tmp_path / "reference"), task=DistillTask(reference),
                          devices=jax.devices()[:1])  # fmt: skip
    ref_trainer.run()
    resumed_config = _distill_config(checkpoint_frozen=False, ema_decay=0.5, num_train_steps=4)
    resumed = Trainer(resumed_config, str(tmp_path), task=DistillTask(resumed_config), devices=jax.devices()[:1])
    summary = resumed.run()
    assert summary["resumed"]
    # The teacher is rebuilt from its (seeded) source, the student continues: same result as an uninterrupted run.
    for prefix in ("teacher", "student"):
        for a, b in zip(jax.tree.leaves(_params_of(ref_trainer, prefix)), jax.tree.leaves(_params_of(resumed, prefix)),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_layer_ids_come_from_the_model():
    class TinyTask(Task):
        def build_model(self, rngs):
            return TinyNet(rngs, depth=3)

    task = TinyTask(base_config())
    assert task.max_layer_id() == 4 and task.num_layers() == 3
    assert [task.layer_id(p) for p in ("embed.kernel", "blocks.0.bias", "blocks.2.kernel", "head.kernel")] == [0, 1, 3, 4]
    tx, _ = optim.build_optimizer(_optimizer_config(layer_decay=0.5), 10, layer_id_fn=task.layer_id,
                                  max_layer_id=task.max_layer_id())  # fmt: skip
    params = {"embed": {"kernel": jnp.ones((3, 4))}, "head": {"kernel": jnp.ones((4, 2))}}
    updates = _first_update(tx, params, jax.tree.map(jnp.ones_like, params))
    assert _ratio(updates, ("embed", "kernel"), ("head", "kernel")) == pytest.approx(0.5**4, rel=1e-5)

    both = Modules({"student": TinyNet(nnx.Rngs(0)), "teacher": NoLayerIds(nnx.Rngs(0))})
    assert both.layer_id("student.blocks.1.kernel") == 2 and both.max_layer_id() == 3
    with pytest.raises(ValueError, match="NoLayerIds"):
        both.layer_id("teacher.linear.kernel")

    class PlainTask(Task):
        def build_model(self, rngs):
            return NoLayerIds(rngs)

    with pytest.raises(ValueError, match="NoLayerIds defines no layer_id"):
        PlainTask(base_config()).max_layer_id()


def test_create_model_of_a_checkpoint_without_frozen_params_takes_them_from_model_pretrained(tmp_path):
    from types import SimpleNamespace

    from zoo import checkpoint
    from zoo.train.trainer import Trainer

    def builder(rngs, **overrides):
        return Modules({"student": TinyNet(rngs), "teacher": TinyNet(rngs, depth=3)})

    entry = SimpleNamespace(name="tiny_distill", builder=builder, cfg=SimpleNamespace(url=None), converter=None)
    source = builder(nnx.Rngs(7))  # the "pretrained" weights the frozen teacher comes from
    checkpoint.save_model(str(tmp_path / "source"), source, meta={"model_name": "tiny_distill"})

    class PretrainedDistill(DistillTask):
        def build_pretrained(self, pretrained, rngs):
            return checkpoint.load_pretrained(entry, pretrained, rngs=rngs, overrides={})

    config = _distill_config(checkpoint_frozen=False, ema_decay=0.5)
    config.model = ml_collections.ConfigDict({"pretrained": str(tmp_path / "source")})
    trainer = Trainer(config, str(tmp_path / "run"), task=PretrainedDistill(config), devices=jax.devices()[:1])
    trainer.run()
    loaded = nnx.to_pure_dict(nnx.state(checkpoint.load_pretrained(entry, str(tmp_path / "run"), rngs=nnx.Rngs(0),
                                                                   overrides={}), nnx.Param))  # fmt: skip
    expected_teacher = nnx.to_pure_dict(nnx.state(source.teacher, nnx.Param))
    for a, b in zip(jax.tree.leaves(expected_teacher), jax.tree.leaves(loaded["teacher"]), strict=True):
        np.testing.assert_array_equal(a, b)
    ema_student = jax.device_get(trainer.ema["student"])
    for a, b in zip(jax.tree.leaves(ema_student), jax.tree.leaves(loaded["student"]), strict=True):
        np.testing.assert_array_equal(a, b)

    config.model.pretrained = ""
    Trainer(config, str(tmp_path / "scratch"), task=DistillTask(config), devices=jax.devices()[:1]).run()
    with pytest.raises(ValueError, match=r"checkpoint_frozen=False.*config.model.pretrained"):
        checkpoint.load_pretrained(entry, str(tmp_path / "scratch"), rngs=nnx.Rngs(0), overrides={})
