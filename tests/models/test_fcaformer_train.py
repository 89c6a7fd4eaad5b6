"""FcaFormer training configs (configs/fcaformer.py): the ImageNet recipe, the official no-decay set on our parameter
paths, and an end-to-end run of the embedded-digits smoke variant through train.py with a reload of its checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from configs.fcaformer import get_config
from zoo.train import optim
from zoo.train.config import validate_config
from zoo.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN1K = ("l1_in1k", "l2_in1k", "l3_in1k", "l4_in1k")
STEPS_PER_EPOCH = 1281167 // 1024

# The official rule (optim_factory.get_parameter_groups): no decay iff the tensor is 1-D or its name ends in ".bias".
# Our names for the official 1-D tensors: biases, LayerNorm/BatchNorm scales (torch ".weight"), layer scales.
OFFICIAL_NO_DECAY_LEAF = re.compile(r"bias|scale|gamma|gamma_1|gamma_2")
# Tensors that look like biases or scales but are not 1-D: the official run decays them, so must we.
DECAYED_EXTRAS = ("attention_biases", "s_token_bias", "s_scale_factors")


def _abstract_model(config):
    return nnx.eval_shape(lambda: zoo.create_model(config.model.name, rngs=nnx.Rngs(0), **dict(config.model.overrides)))


def _param_shapes(model) -> dict[str, tuple[int, ...]]:
    """Dotted parameter path (as the optimizer sees it) -> shape."""
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {optim.path_string(path): tuple(leaf.shape) for path, leaf in flat}


@pytest.mark.parametrize("variant", IN1K)
def test_in1k_config_is_the_official_recipe(variant):
    config = get_config(variant)
    validate_config(config)
    size = variant[:2]
    assert config.model.name == f"fcaformer_{size}"
    assert config.model.overrides.drop_path_rate == {"l1": 0.0, "l2": 0.1, "l3": 0.2, "l4": 0.4}[size]
    assert config.batch_size == 1024 and config.optimizer.lr == 2e-3 and config.optimizer.weight_decay == 0.05
    assert config.num_train_steps == 300 * STEPS_PER_EPOCH
    assert config.optimizer.warmup_steps == 20 * STEPS_PER_EPOCH and config.optimizer.min_lr == 1e-6
    assert config.optimizer.schedule == "warmup_cosine" and config.optimizer.clip_norm == 0.0
    assert config.ema_decay == 0.9999
    data = config.data
    assert (data.auto_augment, data.mixup, data.cutmix, data.label_smoothing, data.reprob) == (
        "rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1, 0.25
    )  # fmt: skip
    assert (data.image_size, data.interpolation, data.crop_pct) == (224, "bicubic", 0.875)
    assert data.train.name == "tfds:imagenet2012" and data.eval.split == "validation"


def test_in1k_batch_argument_scales_lr_and_epochs():
    config = get_config("l2_in1k:512")
    assert config.batch_size == 512 and config.optimizer.lr == pytest.approx(1e-3)
    assert config.num_train_steps == 300 * (1281167 // 512)
    assert config.optimizer.warmup_steps == 20 * (1281167 // 512)


@pytest.mark.parametrize("variant", IN1K)
def test_in1k_no_decay_regexes_match_the_official_set(variant):
    """On the real model's parameter paths: the regexes alone name exactly the official no-decay set (1-D tensors and
    biases), and the trainer's rule (rank <= 1 or a regex, plus its defaults) gives the same split."""
    config = get_config(variant)
    shapes = _param_shapes(_abstract_model(config))
    official = {path for path, shape in shapes.items() if len(shape) == 1 or path.endswith(".bias")}
    by_name = {path for path in shapes if OFFICIAL_NO_DECAY_LEAF.fullmatch(path.rsplit(".", 1)[-1])}
    assert official == by_name, "our leaf names for the official 1-D tensors changed"
    regexes = optim._matches(tuple(config.optimizer.no_decay))
    assert {path for path in shapes if regexes(path)} == official
    trainer_rule = optim._matches(tuple(config.optimizer.no_decay) + optim.DEFAULT_NO_DECAY)
    assert {path for path, shape in shapes.items() if len(shape) <= 1 or trainer_rule(path)} == official
    decayed = set(shapes) - official
    for name in DECAYED_EXTRAS:
        assert any(path.endswith("." + name) for path in decayed), name
    assert all(path.endswith(".kernel") or path.rsplit(".", 1)[-1] in DECAYED_EXTRAS for path in decayed)


def test_digits_optimizer_decays_exactly_the_expected_params():
    """Behavioural check through the trainer's own optax chain: with zero gradients AdamW moves only decayed params."""
    config = get_config("digits_fast")
    validate_config(config)
    config.optimizer.warmup_steps = 0
    tx, _ = optim.build_optimizer(config.optimizer, 10)
    # A narrower, shallower digits model (same parameter kinds, cross attention included) keeps this fast.
    overrides = dict(config.model.overrides, embed_dims=(16, 16, 32, 32), depths=(1, 1, 2, 2), num_heads=(0, 0, 1, 1))
    model = zoo.create_model(config.model.name, rngs=nnx.Rngs(0), **overrides)
    # Non-zero values everywhere so that decay is visible on zero-initialised tensors too.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda x: jnp.ones_like(x), params)
    model = nnx.merge(graphdef, params, rest)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = {k: np.asarray(v) for k, v in _flat(nnx.state(model, nnx.Param)).items()}
    nnx.jit(lambda opt, m, g: opt.update(m, g))(
        optimizer, model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    )
    after = _flat(nnx.state(model, nnx.Param))
    moved = {k for k in before if not np.array_equal(before[k], np.asarray(after[k]))}
    expected = {k for k, v in before.items() if v.ndim > 1}
    assert moved == expected
    assert any(k.endswith("s_token_bias") for k in moved) and any(k.endswith("attention_biases") for k in moved)


def _flat(state) -> dict[str, jax.Array]:
    return {optim.path_string(p): x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}


@pytest.mark.parametrize("variant", ("digits", "digits_fast"))
def test_digits_configs_validate(variant):
    config = get_config(variant)
    validate_config(config)
    assert config.model.overrides.img_size % 32 == 0 and config.data.image_size == config.model.overrides.img_size


# ----------------------------------------------------------------------------------------------------------------------
# End to end through train.py
# ----------------------------------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    return env


def digits_top1(model, config) -> float:
    """Held-out top-1 of `model` on the config's eval split, computed outside the trainer."""
    from zoo import data as data_lib

    d = config.data
    source = data_lib.get_source(d.eval.name, split=d.eval.split, **dict(d.eval.kwargs))
    transform = data_lib.make_image_transform(
        train=False, image_size=d.image_size, crop_pct=d.crop_pct, interpolation=d.interpolation, mean=d.mean,
        std=d.std,
    )  # fmt: skip
    examples = [transform(source[i], np.random.default_rng(0)) for i in range(len(source))]
    images = np.stack([e["image"] for e in examples])
    labels = np.asarray([e["label"] for e in examples])
    logits = jax.jit(lambda m, x: m(x, train=False))(model, images)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


@pytest.mark.slow
def test_digits_fast_trains_end_to_end_and_reloads(tmp_path):
    workdir = tmp_path / "fcaformer_digits_fast"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "configs/fcaformer.py:digits_fast"), "--workdir", str(workdir)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(str(workdir))
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    config = get_config("digits_fast")
    assert len(losses) == config.num_train_steps
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    logged = [r for r in records if "eval/top1" in r][-1]["eval/top1"]
    assert logged > 0.3, f"held-out top-1 {logged} is near chance"
    model = zoo.create_model("fcaformer_l1", pretrained=str(workdir))
    assert model.num_classes == 10
    assert digits_top1(model, config) == pytest.approx(logged, abs=1e-6)
