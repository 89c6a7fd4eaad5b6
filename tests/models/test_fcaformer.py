"""FcaFormer: parameter counts, parity with the official code (golden fixture), conversion, modes, sharding.

The fixture (`fixtures/fcaformer_tiny_*.npz`) holds the state dict, input photos and eval-mode logits of the official
model in a reduced configuration with random weights; `models/fcaformer/README.md` says how it was made. No torch is
needed here.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from models.fcaformer import convert as fca_convert
from models.fcaformer import model as fca_model
from zoo.convert import CheckpointReadError, ConversionError
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
STATE_PATH = os.path.join(FIXTURES, "fcaformer_tiny_state.npz")
IO_PATH = os.path.join(FIXTURES, "fcaformer_tiny_io.npz")

# Exact counts of the official model (`get_param_num()`, hkzhang-git/FcaFormer @ 7dcd8e0, random init on CPU).
OFFICIAL_PARAMS = {
    "fcaformer_l1": 6_187_560,
    "fcaformer_l2": 16_275_870,
    "fcaformer_l3": 27_894_484,
    "fcaformer_l4": 65_638_204,
}


@pytest.fixture(scope="module")
def golden():
    with np.load(IO_PATH) as data:
        io = {k: data[k] for k in data.files}
    config = json.loads(str(io["config"]))
    images = io["photos_bhwc_uint8"].astype(np.float32) / np.float32(255.0)
    images = (images - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return config, images, io["logits"]


@pytest.fixture(scope="module")
def state_dict():
    with np.load(STATE_PATH) as data:
        return {k: data[k] for k in data.files}


def _count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# One jitted eval forward shared by the tests (same model structure -> one compile).
_eval_forward = jax.jit(lambda model, images: model(images))


def _golden_model(config, **overrides):
    """The fixture's weights in a model built with extra overrides (drop path, dtype ...): no random init to compile."""
    return zoo.create_model("fcaformer_l1", pretrained=STATE_PATH, **{**config, **overrides})


def _tiny(**overrides):
    config = {"img_size": 64, "num_classes": 5, "embed_dims": (8, 8, 16, 16), "depths": (1, 1, 3, 2), "num_heads": (0, 0, 2, 2)}
    return zoo.create_model("fcaformer_l1", rngs=nnx.Rngs(params=0, dropout=1), **{**config, **overrides})


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_count_matches_official(name):
    abstract = nnx.eval_shape(lambda: zoo.create_model(name))
    assert _count_params(abstract) == OFFICIAL_PARAMS[name]


def test_registry_entries():
    assert zoo.list_models("fcaformer_*") == sorted(OFFICIAL_PARAMS)
    cfg = zoo.pretrained_cfg("fcaformer_l2")
    assert cfg.input_size == (224, 224, 3) and cfg.interpolation == "bicubic" and cfg.crop_pct == 0.875
    assert cfg.url.startswith("https://pan.baidu.com/")


def test_relative_bias_tables():
    # Official table widths: 196 offsets at 14x14, 49 at 7x7; 4 cross tokens per set at 7x7, 16 at 14x14.
    assert fca_model.relative_bias_index(14, 14)[1] == 196
    idxs, count = fca_model.relative_bias_index(7, 7)
    assert count == 49 and idxs.shape == (49, 49) and idxs[0, 0] == 0 and np.all(idxs == idxs.T)
    abstract = nnx.eval_shape(lambda: zoo.create_model("fcaformer_l2"))
    stage2 = abstract.stages[2].blocks
    assert [b.num_cross for b in stage2] == [0, 16, 32, 48, 64, 80, 96]
    assert stage2[6].dw_conv is None and abstract.stages[3].blocks[1].num_cross == 4


def test_parity_with_official_golden(golden):
    config, images, expected = golden
    model = zoo.create_model("fcaformer_l1", pretrained=STATE_PATH, **config)
    logits = np.asarray(_eval_forward(model, jnp.asarray(images)))
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_parity_through_pallas_attention(golden):
    # The Pallas flash-attention kernel (interpret mode on CPU) with the concatenated relative + cross-token bias.
    config, images, expected = golden
    model = zoo.create_model("fcaformer_l1", pretrained=STATE_PATH, attention_impl="pallas", **config)
    logits = np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(images)))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_use_ema_selects_model_ema(golden, state_dict):
    config, images, expected = golden
    perturbed = {k: (v + 0.5 if v.dtype.kind == "f" else v) for k, v in state_dict.items()}
    checkpoint = {"model": perturbed, "model_ema": state_dict, "epoch": np.int64(299)}
    abstract = nnx.eval_shape(lambda: zoo.create_model("fcaformer_l1", **config))
    ema = fca_convert.convert_fcaformer(checkpoint, abstract, use_ema=True)
    np.testing.assert_allclose(np.asarray(_eval_forward(ema, jnp.asarray(images))), expected, atol=1e-4, rtol=0)
    plain = fca_convert.convert_fcaformer(checkpoint, abstract)
    np.testing.assert_array_equal(np.asarray(plain.head.bias[...]), perturbed["head.bias"])
    # The flag can also come from the builder (so create_model(..., use_ema=True) reaches the converter).
    flagged = nnx.eval_shape(lambda: zoo.create_model("fcaformer_l1", use_ema=True, **config))
    via_flag = fca_convert.convert_fcaformer(checkpoint, flagged)
    np.testing.assert_array_equal(np.asarray(via_flag.head.bias[...]), state_dict["head.bias"])
    with pytest.raises(CheckpointReadError, match="model_ema"):
        fca_convert.convert_fcaformer({"model": state_dict}, abstract, use_ema=True)


def test_converter_reports_missing_and_misshaped_keys(golden, state_dict):
    config, _, _ = golden
    broken = dict(state_dict)
    del broken["layer_2.blocks.1.s_token_bias"]
    broken["layer_3.blocks.0.qkv.weight"] = broken["layer_3.blocks.0.qkv.weight"][:, :-1]
    broken["layer_9.extra.weight"] = np.zeros(3, np.float32)
    abstract = nnx.eval_shape(lambda: zoo.create_model("fcaformer_l1", **config))
    with pytest.raises(ConversionError) as err:
        fca_convert.convert_fcaformer({"model": broken}, abstract)
    message = str(err.value)
    assert "stages.2.blocks.1.s_token_bias" in message  # missing
    assert "layer_3.blocks.0.qkv.weight" in message and "mis-shaped" in message
    assert "layer_9.extra.weight" in message  # unmapped
    # A checkpoint for another variant fails the same way, not silently.
    other = nnx.eval_shape(lambda: zoo.create_model("fcaformer_l1", **{**config, "embed_dims": (16, 16, 24, 48)}))
    with pytest.raises(ConversionError, match="mis-shaped"):
        fca_convert.convert_fcaformer(state_dict, other)


def test_train_mode_drop_path_is_random_eval_is_deterministic(golden):
    config, images, expected = golden
    model = _golden_model(config, drop_path_rate=0.5)
    x = jnp.asarray(images)
    eval_1, eval_2 = _eval_forward(model, x), _eval_forward(model, x)
    np.testing.assert_array_equal(np.asarray(eval_1), np.asarray(eval_2))
    np.testing.assert_allclose(np.asarray(eval_1), expected, atol=1e-4, rtol=0)  # drop path is off in eval
    labels = jnp.array([1, 3])

    @nnx.jit  # carries the BatchNorm running averages and RNG counters back into `model`
    def train_step(m, x):
        def loss_fn(m):
            logits = m(x, train=True)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)), logits

        return nnx.value_and_grad(loss_fn, has_aux=True)(m)

    running_mean = np.asarray(model.patch_embed.conv1.bn.mean[...]).copy()
    (loss, train_1), grads = train_step(model, x)
    (_, train_2), _ = train_step(model, x)
    assert not np.allclose(train_1, eval_1, atol=1e-3)
    assert not np.allclose(train_1, train_2, atol=1e-3)  # fresh drop-path masks each call
    assert not np.allclose(np.asarray(model.patch_embed.conv1.bn.mean[...]), running_mean)  # BN stats updated
    assert np.isfinite(float(loss))
    for grad in (grads.stages[2].blocks[2].s_token_bias[...], grads.stages[2].blocks[3].s_scale_factors[...]):
        assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)


def test_wrong_input_size_is_a_clear_error():
    model = nnx.eval_shape(lambda: _tiny())
    with pytest.raises(ValueError, match="img_size"):
        nnx.eval_shape(lambda m: m(jnp.zeros((1, 96, 96, 3))), model)


def test_attention_impl_is_passed_to_kernels(monkeypatch):
    seen = []
    real = fca_model.kernels.attention

    def spy(q, k, v, **kwargs):
        seen.append((kwargs["impl"], q.shape[1], k.shape[1], kwargs["bias"].shape))
        return real(q, k, v, **{**kwargs, "impl": "xla"})

    monkeypatch.setattr(fca_model.kernels, "attention", spy)
    model = nnx.eval_shape(lambda: _tiny(attention_impl="pallas"))
    nnx.eval_shape(lambda m: m(jnp.zeros((2, 64, 64, 3))), model)
    # Stage 2 (4x4 grid, 1 cross token per set): keys 16, 17, 18; stage 3 (2x2): keys 4, 5.
    assert [s[0] for s in seen] == ["pallas"] * 5
    assert [s[2] for s in seen] == [16, 17, 18, 4, 5]
    assert seen[2][3] == (1, 2, 16, 18)


def test_bfloat16_compute_keeps_f32_params():
    model = nnx.eval_shape(lambda: _tiny(dtype=jnp.bfloat16))
    logits = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 64, 64, 3), jnp.float32))
    assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 5)
    dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_sharding_annotations_under_a_mesh():
    devices = np.array(jax.devices()[:8]).reshape(4, 2)
    mesh = jax.sharding.Mesh(devices, ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        model = nnx.eval_shape(lambda: _tiny())
    block = model.stages[2].blocks[1]
    specs = {
        "qkv": (block.qkv.kernel, (None, "model")),
        "proj": (block.proj.kernel, ("model", None)),
        "fc1": (block.mlp.fc1.kernel, (None, "model")),
        "fc2": (block.mlp.fc2.kernel, ("model", None)),
        "pwconv1": (model.stages[0].blocks[0].pwconv1.kernel, (None, "model")),
    }
    for name, (variable, spec) in specs.items():
        assert variable.get_metadata()["out_sharding"] == spec, name
        assert variable.get_value().sharding.spec == jax.sharding.PartitionSpec(*spec), name


def test_call_time_rngs_for_drop_path():
    model = nnx.eval_shape(lambda: _tiny(drop_path_rate=0.3))
    x = jnp.zeros((2, 64, 64, 3))
    out = nnx.eval_shape(lambda m: m(x, train=True, rngs=nnx.Rngs(dropout=3)), model)
    assert out.shape == (2, 5)
    plain = nnx.eval_shape(lambda: _tiny())  # no drop path: no RNG state to carry
    assert not jax.tree.leaves(nnx.state(plain, nnx.RngState))
