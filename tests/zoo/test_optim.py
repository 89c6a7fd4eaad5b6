"""optax from config: weight-decay masks, frozen parameters, layer-wise LR decay, schedules, clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zoo.train import optim


def _config(**kwargs):
    base = {"name": "adamw", "lr": 0.1, "weight_decay": 0.5, "schedule": "constant", "no_decay": (), "frozen": ()}
    base.update(kwargs)
    return ml_collections.ConfigDict(base)


def _params():
    return {
        "patch_embed": {"kernel": jnp.ones((4, 4))},
        "blocks": {0: {"fc": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}},
                   1: {"fc": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))}}},
        "pos_embed": jnp.ones((3, 4)),
        "head": {"kernel": jnp.ones((4, 2))},
    }  # fmt: skip


def _step(tx, params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return jax.tree.map(lambda p, u: p + u, params, updates)


def test_weight_decay_skips_biases_norms_and_named_params():
    params = _params()
    tx, _ = optim.build_optimizer(_config(no_decay=(r"head\..*",)), 10)
    new = _step(tx, params, jax.tree.map(jnp.zeros_like, params))  # zero gradients: only decay moves params
    assert float(new["blocks"][0]["fc"]["kernel"][0, 0]) < 1.0  # 2-D kernel decays
    assert float(new["blocks"][0]["fc"]["bias"][0]) == 1.0  # 1-D bias does not
    assert float(new["pos_embed"][0, 0]) == 1.0  # default no-decay name
    assert float(new["head"]["kernel"][0, 0]) == 1.0  # configured regex


def test_frozen_parameters_do_not_move():
    params = _params()
    tx, _ = optim.build_optimizer(_config(frozen=(r"blocks\.0\..*", r"patch_embed\..*")), 10)
    new = _step(tx, params, jax.tree.map(jnp.ones_like, params))
    np.testing.assert_array_equal(new["blocks"][0]["fc"]["kernel"], params["blocks"][0]["fc"]["kernel"])
    np.testing.assert_array_equal(new["patch_embed"]["kernel"], params["patch_embed"]["kernel"])
    assert float(jnp.abs(new["blocks"][1]["fc"]["kernel"] - 1.0).max()) > 0


def test_layer_decay_scales_updates_by_depth():
    params = _params()

    def layer_id(path):
        if path.startswith(("patch_embed", "pos_embed")):
            return 0
        if path.startswith("blocks."):
            return int(path.split(".")[1]) + 1
        return 3

    tx, _ = optim.build_optimizer(_config(weight_decay=0.0, layer_decay=0.5), 10, layer_id_fn=layer_id, num_layers=2)
    new = _step(tx, params, jax.tree.map(jnp.ones_like, params))
    moved = {name: float(jnp.abs(new[name[0]][name[1]]["fc"]["kernel"] - 1).max()) if len(name) == 2 else
             float(jnp.abs(new[name[0]]["kernel"] - 1).max()) for name in [("head",), ("blocks", 1), ("blocks", 0),
                                                                           ("patch_embed",)]}  # fmt: skip
    assert moved[("blocks", 1)] / moved[("head",)] == pytest.approx(0.5, rel=1e-5)
    assert moved[("blocks", 0)] / moved[("head",)] == pytest.approx(0.25, rel=1e-5)
    assert moved[("patch_embed",)] / moved[("head",)] == pytest.approx(0.125, rel=1e-5)


def test_warmup_cosine_schedule_and_clipping():
    _, schedule = optim.build_optimizer(_config(schedule="warmup_cosine", warmup_steps=10, min_lr=0.01), 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(110)) == pytest.approx(0.01)
    tx, _ = optim.build_optimizer(_config(name="sgd", weight_decay=0.0, clip_norm=1.0, momentum=0.0), 10)
    params = {"w": jnp.zeros((4,))}
    new = _step(tx, params, {"w": jnp.full((4,), 100.0)})
    assert float(jnp.linalg.norm(new["w"])) == pytest.approx(0.1, rel=1e-5)  # lr * clipped unit-norm gradient


def test_unknown_optimizer_and_schedule_are_clear_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adam_w'"):
        optim.build_optimizer(_config(name="adam_w"), 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.build_optimizer(_config(schedule="cosine_restarts"), 10)
    with pytest.raises(ValueError, match="layer_decay needs"):
        optim.build_optimizer(_config(layer_decay=0.7), 10)
