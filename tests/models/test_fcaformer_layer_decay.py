"""FcaFormer layer ids for layer-wise LR decay (`FcaFormer.layer_id` / `max_layer_id`), alone and through the trainer's
optimizer (`zoo.train.optim.build_optimizer(..., layer_id_fn=model.layer_id)`)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import zoo
from zoo.train import optim

# 7 blocks (1 + 1 + 3 + 2): ids 0 (stem), 1..7 (blocks), 8 (norm_head, head).
TINY = {"img_size": 64, "num_classes": 5, "embed_dims": (8, 8, 16, 16), "depths": (1, 1, 3, 2), "num_heads": (0, 0, 2, 2)}


@pytest.fixture(scope="module")
def model():
    # Shapes only: layer ids depend on the structure, and the optimizer check below fills its own values.
    return nnx.eval_shape(lambda: zoo.create_model("fcaformer_l1", rngs=nnx.Rngs(0), **TINY))


def _param_paths(model) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return [optim.path_string(path) for path, _ in flat]


def test_layer_ids_follow_forward_order(model):
    assert model.max_layer_id() == 8
    expected = {
        "patch_embed.conv1.conv.kernel": 0,
        "patch_embed.conv2.bn.scale": 0,
        "stages.0.blocks.0.dwconv.kernel": 1,
        "stages.0.downsample.conv1.conv.kernel": 2,  # grouped with the block after it (stages.1.blocks.0)
        "stages.1.blocks.0.pwconv2.kernel": 2,
        "stages.1.downsample.conv3.bn.bias": 3,
        "stages.2.blocks.0.attn.qkv.kernel": 3,
        "stages.2.blocks.2.s_token_bias": 5,
        "stages.2.blocks.2.mlp.fc1.kernel": 5,
        "stages.2.downsample.conv2.conv.kernel": 6,
        "stages.3.blocks.0.attn.proj.bias": 6,
        "stages.3.blocks.1.mlp_norm.scale": 7,
        "norm_head.scale": 8,
        "head.kernel": 8,
    }
    paths = set(_param_paths(model))
    assert set(expected) <= paths, sorted(set(expected) - paths)
    assert {path: model.layer_id(path) for path in expected} == expected
    # Every real parameter gets an id, and every id from the stem to the head is used.
    assert {model.layer_id(path) for path in paths} == set(range(model.max_layer_id() + 1))
    with pytest.raises(ValueError, match="no parameter path"):
        model.layer_id("stages.3.downsample.conv1.conv.kernel")  # the last stage has no downsampling


def test_layer_decay_through_the_optimizer(model):
    # Plain SGD: the update is lr * gradient * scale, so the ratios are the layer scales themselves (the scaling is
    # applied after the core optimizer, so AdamW scales the same way).
    decay = 0.5
    cfg = ml_collections.ConfigDict(
        {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "layer_decay": decay}
    )
    tx, _ = optim.build_optimizer(cfg, 10, layer_id_fn=model.layer_id, num_layers=model.max_layer_id() - 1)
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    grads = jax.tree.map(np.ones_like, params)
    # One compiled step: eager optax would compile each op for each of the ~170 parameter shapes.
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    moved = {optim.path_string(p): float(np.abs(np.asarray(u)).max()) for p, u in flat}

    head = moved["head.kernel"]
    assert head == pytest.approx(0.1, rel=1e-5)  # the head gets the full learning rate
    stem = moved["patch_embed.conv1.conv.kernel"]
    # Ratios are relative to the magnitudes: the stem's update is decay ** 8 (~4e-3) of the head's.
    np.testing.assert_allclose(stem / head, decay ** model.max_layer_id(), rtol=1e-5)
    block = moved["stages.2.blocks.2.attn.qkv.kernel"]  # layer 5
    np.testing.assert_allclose(block / head, decay ** (model.max_layer_id() - 5), rtol=1e-5)
    for path, value in moved.items():  # one scale per layer, the same for every parameter of it
        np.testing.assert_allclose(value / head, decay ** (model.max_layer_id() - model.layer_id(path)), rtol=1e-5)
