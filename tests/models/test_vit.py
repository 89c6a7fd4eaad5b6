"""ViT: parity with timm on random weights, checkpoint reading and conversion errors, input checks, param counts,
position-embedding resampling, the `python -m zoo.convert` round trip, drop path and sharding metadata."""

from __future__ import annotations

import zipfile

import jax
import numpy as np
import pytest
from flax import nnx

import zoo
from tests.helpers import real_photo, require
from zoo import convert as convert_lib

# timm 1.0.31, counted once with sum(p.numel() for p in timm.create_model(name).parameters()).
TIMM_PARAM_COUNTS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
}
TOLERANCE = 1e-4


def _photos(size: int = 224) -> np.ndarray:
    """Two real photos, NHWC float32 normalised with the augreg mean/std of 0.5."""
    images = np.stack([real_photo("china", size), real_photo("flower", size)]).astype(np.float32) / 255.0
    return (images - 0.5) / 0.5


def _torch_forward(model, images: np.ndarray):
    torch = require("torch")
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        tokens = model.forward_features(x)
        return model.forward_head(tokens).numpy(), tokens.numpy()


def _save(state_dict, path, kind: str) -> str:
    torch = require("torch")
    if kind == "pth":
        torch.save(state_dict, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """timm vit_tiny_patch16_224 with random weights, its outputs on real photos, and its state dict as .pth."""
    timm = require("timm")
    require("torch").manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    images = _photos()
    logits, tokens = _torch_forward(reference, images)
    path = _save(reference.state_dict(), tmp_path_factory.mktemp("vit") / "tiny.pth", "pth")
    return {"reference": reference, "images": images, "logits": logits, "tokens": tokens, "path": path}


@jax.jit
def _features_and_logits(model, images):
    tokens = model.forward_features(images)
    return tokens, model.forward_head(tokens)


def _assert_parity(model, images, logits, tokens):
    ours_tokens, ours_logits = (np.asarray(a) for a in _features_and_logits(model, images))
    assert ours_tokens.shape == tokens.shape and ours_logits.shape == logits.shape
    assert np.abs(ours_tokens - tokens).max() <= TOLERANCE
    assert np.abs(ours_logits - logits).max() <= TOLERANCE


def test_tiny_parity_pth(tiny):
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=tiny["path"])
    _assert_parity(model, tiny["images"], tiny["logits"], tiny["tokens"])


def test_tiny_parity_safetensors(tiny, tmp_path):
    path = _save(tiny["reference"].state_dict(), tmp_path / "tiny.safetensors", "safetensors")
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=path)
    _assert_parity(model, tiny["images"], tiny["logits"], tiny["tokens"])


def test_base_reduced_depth_parity(tmp_path):
    timm = require("timm")
    require("torch").manual_seed(1)
    reference = timm.create_model("vit_base_patch16_224", pretrained=False, depth=2).eval()
    images = _photos()
    logits, tokens = _torch_forward(reference, images)
    path = _save(reference.state_dict(), tmp_path / "base.safetensors", "safetensors")
    model = zoo.create_model("vit_base_patch16_224", pretrained=path, depth=2)
    _assert_parity(model, images, logits, tokens)


def test_avg_pool_no_class_token_layer_scale_parity(tmp_path):
    """The other timm options: global average pool + fc_norm, no class token, layer scale, another resolution."""
    timm = require("timm")
    require("torch").manual_seed(2)
    options = {"depth": 2, "class_token": False, "global_pool": "avg", "init_values": 0.1, "img_size": 160, "num_classes": 7}
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, **options).eval()
    images = _photos(160)
    logits, tokens = _torch_forward(reference, images)
    path = _save(reference.state_dict(), tmp_path / "avg.pth", "pth")
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, **options)
    _assert_parity(model, images, logits, tokens)


def test_tensor_only_reader_matches_torch(tiny):
    expected = tiny["reference"].state_dict()
    arrays = convert_lib._read_torch_zip_without_torch(tiny["path"])
    assert set(arrays) == set(expected)
    for key, tensor in expected.items():
        np.testing.assert_array_equal(arrays[key], tensor.numpy())


def _small_state_dict():
    timm = require("timm")
    return {k: v.numpy() for k, v in timm.create_model("vit_tiny_patch16_224", depth=1).state_dict().items()}


def test_missing_and_misshaped_keys_are_listed_together():
    state_dict = _small_state_dict()
    del state_dict["blocks.0.mlp.fc1.bias"]
    state_dict["blocks.0.attn.proj.weight"] = state_dict["blocks.0.attn.proj.weight"][:, :-1]
    state_dict["blocks.0.extra.weight"] = np.zeros(3, np.float32)
    abstract = nnx.eval_shape(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1))
    with pytest.raises(convert_lib.ConversionError) as info:
        zoo.get_model_entry("vit_tiny_patch16_224").converter(state_dict, abstract)
    message = str(info.value)
    assert "blocks.0.mlp.fc1.bias" in message
    assert "blocks.0.attn.proj.weight" in message and "mis-shaped" in message
    assert "blocks.0.extra.weight" in message and "unmapped" in message


def test_head_of_another_size_is_dropped(tmp_path):
    torch = require("torch")
    state_dict = {k: torch.from_numpy(v) for k, v in _small_state_dict().items()}
    path = _save(state_dict, tmp_path / "head.pth", "pth")
    with pytest.warns(UserWarning, match="head"):
        model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, depth=1, num_classes=10)
    assert model.head.kernel.shape == (192, 10)
    np.testing.assert_array_equal(np.asarray(model.blocks[0].norm1.scale[...]), state_dict["blocks.0.norm1.weight"])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_raises_read_error(tiny, tmp_path, damage):
    with open(tiny["path"], "rb") as handle:
        data = handle.read()
    path = tmp_path / "bad.pth"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 100)
    with pytest.raises(convert_lib.CheckpointReadError, match="bad.pth"):
        zoo.create_model("vit_tiny_patch16_224", pretrained=str(path))
    if damage == "truncated":
        with pytest.raises((zipfile.BadZipFile, EOFError, OSError, ValueError)):  # the reader alone: zip errors
            convert_lib._read_torch_zip_without_torch(str(path))


@pytest.mark.parametrize(
    "shape,dtype,match",
    [
        ((1, 3, 224, 224), np.float32, "NCHW"),
        ((1, 224, 224, 3), np.uint8, "dtype uint8"),
        ((224, 224, 3), np.float32, "rank 3"),
        ((1, 256, 256, 3), np.float32, "img_size"),
    ],
)
def test_wrong_input_is_a_clear_error(shape, dtype, match):
    # The check runs before any compute, so an abstract model is enough.
    model = nnx.eval_shape(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1))
    with pytest.raises(ValueError, match=match) as info:
        model(np.zeros(shape, dtype))
    assert "(batch, 224, 224, 3)" in str(info.value)


@pytest.mark.parametrize("name", sorted(TIMM_PARAM_COUNTS))
def test_param_counts_match_timm(name):
    abstract = nnx.eval_shape(lambda: zoo.create_model(name))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == TIMM_PARAM_COUNTS[name]


def test_all_vit_variants_have_counts():
    assert set(zoo.list_models("vit_*")) == set(TIMM_PARAM_COUNTS)


@pytest.mark.parametrize("new_size", [(16, 16), (7, 7), (12, 20), (24, 24)])
@pytest.mark.parametrize("antialias", [True, False])
def test_pos_embed_resampling_matches_timm(new_size, antialias):
    torch = require("torch")
    require("timm")
    from timm.layers import resample_abs_pos_embed as timm_resample

    from models.vit import resample_abs_pos_embed

    pos_embed = np.random.RandomState(0).randn(1, 1 + 14 * 14, 32).astype(np.float32)
    expected = timm_resample(torch.from_numpy(pos_embed), list(new_size), num_prefix_tokens=1, antialias=antialias)
    ours = resample_abs_pos_embed(pos_embed, new_size, num_prefix_tokens=1, antialias=antialias)
    assert ours.shape == tuple(expected.shape)
    assert np.abs(ours - expected.numpy()).max() <= 1e-5


def test_finetune_resolution_matches_timm_loading(tiny):
    """A 224 checkpoint loaded into a 256 model: our converter resamples as timm's checkpoint_filter_fn does."""
    timm = require("timm")
    from timm.models.vision_transformer import checkpoint_filter_fn

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=256).eval()
    reference.load_state_dict(checkpoint_filter_fn(tiny["reference"].state_dict(), reference))
    images = _photos(256)
    logits, tokens = _torch_forward(reference, images)
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=tiny["path"], img_size=256)
    _assert_parity(model, images, logits, tokens)


def test_convert_cli_round_trip(tiny, tmp_path):
    """`python -m zoo.convert` (its `main`) writes an orbax directory that create_model reloads, overrides included."""
    out = tmp_path / "orbax"
    assert convert_lib.main(["--model", "vit_tiny_patch16_224", "--src", tiny["path"], "--out", str(out)]) == 0
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=str(out))
    _assert_parity(model, tiny["images"], tiny["logits"], tiny["tokens"])
    assert convert_lib.main(["--model", "vit_tiny_patch16_224", "--src", tiny["path"], "--out", str(out)]) == 2


def test_drop_path_train_and_eval(tiny):
    """Loading with drop_path_rate > 0 works; eval is deterministic and equals the reference, train is random."""
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=tiny["path"], drop_path_rate=0.5, drop_rate=0.1)
    images = tiny["images"]
    train_step = nnx.jit(lambda m, x: m(x, train=True))  # nnx.jit carries the advanced dropout stream out
    first, second = np.asarray(train_step(model, images)), np.asarray(train_step(model, images))
    assert not np.allclose(first, second)
    # No dropout anywhere: the model holds no RNG state, so checkpoints and conversions carry none.
    plain = nnx.eval_shape(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1))
    assert not list(nnx.to_flat_state(nnx.state(plain, nnx.RngState)))


def test_partition_specs_without_and_with_a_mesh():
    # Abstract builds (eval_shape) carry the same metadata as concrete ones and skip compiling the initialisers.
    model = nnx.eval_shape(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1))
    specs = nnx.get_partition_spec(nnx.state(model))
    block = specs["blocks"][0]
    assert tuple(block["attn"]["qkv"]["kernel"].get_value()) == (None, "model")
    assert tuple(block["attn"]["proj"]["kernel"].get_value()) == ("model", None)
    assert tuple(block["mlp"]["fc1"]["kernel"].get_value()) == (None, "model")
    assert tuple(block["mlp"]["fc2"]["kernel"].get_value()) == ("model", None)
    mesh = jax.make_mesh((2, 4), ("fsdp", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    _, abstract_state = nnx.get_abstract_model(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1), mesh)
    fc1 = abstract_state["blocks"][0]["mlp"]["fc1"]["kernel"].get_value()
    assert fc1.sharding.spec == jax.sharding.PartitionSpec(None, "model")


def test_bfloat16_compute_with_float32_params():
    import jax.numpy as jnp

    model = nnx.eval_shape(lambda: zoo.create_model("vit_tiny_patch16_224", depth=1, dtype=jnp.bfloat16))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    assert logits.shape == (2, 1000) and logits.dtype == jnp.bfloat16


def _random_model(name: str, seed: int = 0, **overrides):
    """A model with random weights merged in from numpy (no initialiser compiles): cheap for small checks."""
    abstract = nnx.eval_shape(lambda: zoo.create_model(name, **overrides))
    rng = np.random.default_rng(seed)
    arrays = {
        path: (rng.standard_normal(leaf.shape) * 0.05).astype(leaf.dtype)
        for path, leaf in convert_lib.flat_paths(nnx.state(abstract, nnx.Param)).items()
    }
    return convert_lib.merge_into_model(abstract, arrays)


def test_attention_impl_reaches_the_kernel():
    """attention_impl is passed down to every block; the Pallas path (interpret mode on CPU) equals XLA."""
    options = {"depth": 1, "img_size": 32, "num_classes": 5}
    xla = _random_model("vit_tiny_patch16_224", attention_impl="xla", **options)
    pallas = _random_model("vit_tiny_patch16_224", attention_impl="pallas", **options)
    assert all(block.attn.attention_impl == "pallas" for block in pallas.blocks)
    images = _photos(32)
    expected = jax.jit(lambda m, x: m(x))(xla, images)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda m, x: m(x))(pallas, images)), expected, atol=1e-4)
