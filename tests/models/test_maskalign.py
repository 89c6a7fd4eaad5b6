"""MaskAlign: parity with the official code (golden fixtures), conversion, param counts, masking, options, errors.

The fixtures (`fixtures/maskalign_{linear,sum,l14like}.npz`) hold the state dict, inputs, fixed `ids_keep` and the
outputs of the official `models_pretrain.py` at reduced width with a random-init HF `CLIPVisionModel` teacher;
`models/maskalign/README.md` says how they were made. No torch is needed here.
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
from models.layers import Buffer
from models.maskalign import convert as ma_convert
from models.maskalign import masking
from models.maskalign.model import MaskAlign, loss_weight_list, teacher_targets
from models.maskalign.student import get_2d_sincos_pos_embed
from models.maskalign.teacher import build_clip_teacher
from zoo.convert import ConversionError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
EPS = float(np.finfo(np.float32).eps)

# Exact counts of the official model (OpenDriveLab/maskalign @ 250d018 with a random-init HF CLIPVisionModel of the
# teacher's config, transformers 5.24, timm 1.0.31): parameters with requires_grad, and all (incl. the frozen
# pos_embed and the teacher). The spec's measured 92.73M / 178.69M for B/16 + CLIP-B/16.
OFFICIAL_PARAMS = {
    "maskalign_vit_base_patch16_clip_b16": (92_734_608, 178_685_328),
    "maskalign_vit_large_patch16_clip_b16": (312_546_592, 398_547_744),
    "maskalign_vit_large_patch16_clip_l14": (328_290_880, 631_610_944),
}


def bound(reference: np.ndarray, fan_in: int, layers: int) -> float:
    """float32 rounding budget of a value computed through `layers` transformer layers whose longest dot products
    have `fan_in` terms: 16 eps per layer (softmax, LayerNorm, GELU and the residual adds each round a few times),
    times sqrt(fan_in) (random-walk accumulation of a dot product's rounding), times the output's magnitude."""
    return 16 * EPS * float(np.max(np.abs(reference))) * np.sqrt(fan_in) * layers


def load_case(name: str):
    with np.load(os.path.join(FIXTURES, f"maskalign_{name}.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    state = {k.removeprefix("state/"): v for k, v in arrays.items() if k.startswith("state/")}
    io = {k: v for k, v in arrays.items() if not k.startswith("state/")}
    return json.loads(str(io.pop("config"))), state, io


def build_kwargs(config) -> dict:
    teacher = config["teacher"]
    teacher_overrides = {
        "img_size": config["teacher_input"] or teacher["image_size"], "patch_size": teacher["patch_size"],
        "width": teacher["hidden_size"], "layers": teacher["num_hidden_layers"],
        "heads": teacher["num_attention_heads"],
    }
    return {**config["student"], **config["options"], "mask_ratio": config["mask_ratio"],
            "teacher_overrides": teacher_overrides}


def abstract_model(config) -> MaskAlign:
    kwargs = build_kwargs(config)
    return nnx.eval_shape(lambda: zoo.create_model("maskalign_vit_base_patch16_clip_b16", **kwargs))


_forward = nnx.jit(lambda model, images, ids_keep: model(images, ids_keep=ids_keep))


@nnx.jit
def _pieces(model, images, ids_keep):
    teacher = model.teacher(images)
    student_hidden = model.student(images, ids_keep)
    targets = teacher_targets(teacher.hidden_states, ids_keep, model.target_norm)
    return teacher, jnp.stack(student_hidden), jnp.stack(model.align(student_hidden)), jnp.stack(targets)


CASES = ("linear", "sum", "l14like")


@pytest.fixture(scope="module", params=CASES)
def case(request):
    config, state, io = load_case(request.param)
    model = ma_convert.convert_maskalign({"model": state, "epoch": np.int64(1)}, abstract_model(config))
    return request.param, config, state, io, model


def test_parity_with_official_golden(case):
    name, config, _, io, model = case
    images, ids_keep = jnp.asarray(io["images_bhwc"]), jnp.asarray(io["ids_keep"])
    teacher, student_hidden, predictions, targets = _pieces(model, images, ids_keep)
    out = _forward(model, images, ids_keep)
    t_width, s_width = config["teacher"]["hidden_size"], config["student"]["embed_dim"]
    t_depth, s_depth = config["teacher"]["num_hidden_layers"], config["student"]["depth"]
    t_fan, s_fan = 4 * t_width, 4 * s_width  # the MLPs hold the longest sums
    checks = {
        "teacher_hidden_states": (np.stack(teacher.hidden_states), bound(io["teacher_hidden_states"], t_fan, t_depth)),
        "importance": (teacher.cls_attention, bound(io["importance"], t_fan, t_depth)),
        "student_hidden_states": (student_hidden, bound(io["student_hidden_states"], s_fan, s_depth)),
        "predictions": (predictions, bound(io["predictions"], s_fan, s_depth + 2)),
    }
    for key, (got, tol) in checks.items():
        err = float(np.max(np.abs(np.asarray(got) - io[key])))
        assert err <= tol, f"{name}: {key} max abs err {err:.3g} > {tol:.3g}"
    # Each layer term is a mean whose derivative in (target - pred) is at most 2 * max(1, |target - pred|) for
    # l1 / smooth-L1 / l2, so its error is bounded by that times the errors of the predictions and of the targets
    # (the normalised teacher states: their budget is taken at their own magnitude); the weights sum to 1.
    targets = np.asarray(targets)
    slope = 2 * max(1.0, float(np.max(np.abs(targets - io["predictions"]))))
    loss_tol = slope * (checks["predictions"][1] + bound(targets, t_fan, t_depth + 1))
    np.testing.assert_allclose(np.asarray(out.layer_losses), io["layer_losses"], atol=loss_tol, rtol=0)
    assert abs(float(out.loss) - float(io["loss"])) <= loss_tol
    np.testing.assert_array_equal(np.asarray(out.ids_keep), io["ids_keep"])


def test_sincos_table_matches_the_checkpoint(case):
    _, config, state, _, _ = case
    student = config["student"]
    grid = student["img_size"] // student["patch_size"]
    table = get_2d_sincos_pos_embed(student["embed_dim"], grid, cls_token=True).astype(np.float32)
    np.testing.assert_array_equal(table[None], state["pos_embed"])
    fresh = abstract_model(config).student.pos_embed
    assert isinstance(fresh, Buffer) and fresh.shape == state["pos_embed"].shape


def test_random_masking_matches_official_noise():
    config, _, io = load_case("sum")
    keep = masking.num_keep(io["noise"].shape[1], config["mask_ratio"])
    ids = masking.keep_ids_from_noise(jnp.asarray(io["noise"]), keep)
    np.testing.assert_array_equal(np.asarray(ids), io["ids_keep"])


def test_transformers_4_layout_and_unresized_position_embedding():
    config, state, io = load_case("l14like")
    # transformers 4.x: `clip_model.vision_model.*`, with the (ignored) position_ids buffer; and the teacher's
    # original 10x10 position table, which the converter resamples to the 8x8 grid (torch bicubic, no antialias).
    old = {}
    for key, value in state.items():
        old[key.replace("clip_model.", "clip_model.vision_model.", 1) if key.startswith("clip_model.") else key] = value
    old["clip_model.vision_model.embeddings.position_embedding.weight"] = io["teacher_position_embedding_unresized"]
    old["clip_model.vision_model.embeddings.position_ids"] = np.arange(101)[None]
    model = ma_convert.convert_maskalign({"model": old}, abstract_model(config))
    teacher, _, _, _ = _pieces(model, jnp.asarray(io["images_bhwc"]), jnp.asarray(io["ids_keep"]))
    hidden = np.stack(teacher.hidden_states)
    tol = bound(io["teacher_hidden_states"], 4 * config["teacher"]["hidden_size"], config["teacher"]["num_hidden_layers"])
    assert float(np.max(np.abs(hidden - io["teacher_hidden_states"]))) <= tol


def test_converter_reports_every_problem_at_once():
    config, state, _ = load_case("linear")
    broken = dict(state)
    del broken["blocks.1.attn.qkv.bias"]
    del broken["clip_model.encoder.layers.0.self_attn.k_proj.weight"]
    broken["distill_heads.0.weight"] = broken["distill_heads.0.weight"][:, :-1]
    broken["extra.thing"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError) as err:
        ma_convert.convert_maskalign(broken, abstract_model(config))
    message = str(err.value)
    for expected in ("student.blocks.1.attn.qkv.bias", "extra.thing", "distill_heads.0.weight", "mis-shaped",
                     "encoder.layers.0.self_attn.q_proj.weight", "tower.transformer.resblocks.0.attn.qkv.kernel"):
        assert expected in message, expected
    # Another head type than the checkpoint's is a mismatch, not a silent partial load.
    other = dict(config, options=dict(config["options"], head_type="mlp"))
    with pytest.raises(ConversionError):
        ma_convert.convert_maskalign(state, abstract_model(other))


def test_finetune_vit_from_student():
    config, state, io = load_case("linear")
    student = config["student"]
    kwargs = {"img_size": student["img_size"], "patch_size": student["patch_size"], "embed_dim": student["embed_dim"],
              "depth": student["depth"], "num_heads": student["num_heads"], "num_classes": 7}
    abstract = nnx.eval_shape(lambda: zoo.create_model("maskalign_vit_base_patch16_ft", **kwargs))
    vit = ma_convert.convert_maskalign_to_vit({"model": state}, abstract)
    assert vit.norm is None and vit.global_pool == "avg"
    np.testing.assert_array_equal(np.asarray(vit.fc_norm.scale[...]), 1.0)
    head = np.asarray(vit.head.kernel[...])
    assert head.shape == (student["embed_dim"], 7) and 0 < np.abs(head).max() <= 4e-5
    # The ViT's blocks on all patches equal the student's on ids = all patches in order.
    images = jnp.asarray(io["images_bhwc"])
    _, hidden = jax.jit(lambda m, x: m.forward_features(x, return_hidden_states=True))(vit, images)
    model = ma_convert.convert_maskalign(state, abstract_model(config))
    all_ids = jnp.broadcast_to(jnp.arange(model.student.num_patches), (2, model.student.num_patches))
    ours = model.student(images, all_ids)
    np.testing.assert_allclose(np.asarray(hidden[-1]), np.asarray(ours[-1]), atol=1e-5, rtol=0)
    # At another resolution the sin-cos table is resampled (grid 8 -> 12).
    bigger = nnx.eval_shape(lambda: zoo.create_model("maskalign_vit_base_patch16_ft", **{**kwargs, "img_size": 48}))
    assert ma_convert.convert_maskalign_to_vit(state, bigger).pos_embed.shape == (1, 145, student["embed_dim"])


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_counts_match_official(name):
    model = nnx.eval_shape(lambda: zoo.create_model(name))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    trainable = sum(int(np.prod(v.get_value().shape)) for path, v in flat if path[0] != "teacher")
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    total += sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, Buffer)))
    assert (trainable, total) == OFFICIAL_PARAMS[name]


def test_registry_and_layer_ids():
    names = zoo.list_models("maskalign_*")
    assert set(OFFICIAL_PARAMS) <= set(names) and "maskalign_vit_base_patch16_vit_teacher" in names
    cfg = zoo.pretrained_cfg("maskalign_vit_base_patch16_clip_b16")
    assert cfg.weights_source == "manual" and cfg.manual_url.startswith("https://drive.google.com/")
    model = nnx.eval_shape(lambda: zoo.create_model("maskalign_vit_large_patch16_clip_l14"))
    assert model.teacher.img_size == (196, 196) and model.num_keep == 58
    assert model.max_layer_id() == 25
    assert model.layer_id("student.pos_embed") == 0 and model.layer_id("student.blocks.3.mlp.fc1.kernel") == 4
    assert model.layer_id("distill_heads.2.fc.kernel") == 25 and model.layer_id("teacher.tower.ln_pre.scale") == 25


def _tiny(**overrides) -> MaskAlign:
    rngs = nnx.Rngs(params=0, dropout=1)
    teacher = build_clip_teacher(img_size=32, patch_size=8, width=16, layers=2, heads=2, rngs=rngs)
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "loss_weights": "mean",
              **overrides}
    return MaskAlign(teacher=teacher, rngs=rngs, **kwargs)


def test_training_step_gradients_and_frozen_teacher():
    model = _tiny(drop_path_rate=0.3, loss_weights="out")
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))

    @nnx.jit
    def step(m, key):
        return nnx.value_and_grad(lambda m: m(images, mask_key=key, train=True).loss)(m)

    loss, grads = step(model, jax.random.key(1))
    assert np.isfinite(float(loss))
    teacher_grads = jax.tree.leaves(nnx.state(grads, nnx.Param)["teacher"])
    assert all(float(jnp.abs(g).max()) == 0 for g in teacher_grads if g.size)
    assert float(jnp.abs(grads.distill_heads[1].fc.kernel[...]).max()) > 0
    assert float(jnp.abs(grads.distill_heads[0].fc.kernel[...]).max()) == 0  # weight 0 ("out"): no gradient
    assert float(jnp.abs(grads.distill_weights[...]).max()) > 0
    assert "pos_embed" not in nnx.state(grads, nnx.Param)["student"]
    again, _ = step(model, jax.random.key(1))
    assert float(again) != float(loss)  # fresh drop-path draws


def test_attention_masking_distribution():
    importance = jnp.asarray(np.linspace(0.01, 1.0, 16, dtype=np.float32))[None].repeat(4000, 0)
    ids = masking.attention_keep_ids(jax.random.key(0), importance, 5)
    counts = np.bincount(np.asarray(ids).ravel(), minlength=16)
    assert all(len(set(row)) == 5 for row in np.asarray(ids[:200]).tolist())  # without replacement
    # Keep frequency increases with the importance (quartile sums, far apart at 4000 draws).
    quartiles = counts.reshape(4, 4).sum(1)
    assert np.all(np.diff(quartiles) > 0.05 * counts.sum())
    # The first draw follows importance / sum exactly in expectation.
    first = np.bincount(np.asarray(ids[:, 0]), minlength=16) / 4000
    expected = np.asarray(importance[0] / importance[0].sum())
    assert np.max(np.abs(first - expected)) < 4 * np.sqrt(expected.max() / 4000)
    # One-hot-ish importance: the important patches are always kept.
    peaked = np.full((500, 16), 1e-6, np.float32)
    peaked[:, [2, 7, 11]] = 1.0
    kept = np.asarray(masking.attention_keep_ids(jax.random.key(1), jnp.asarray(peaked), 4))
    assert all({2, 7, 11} <= set(row) for row in kept.tolist())


def test_random_masking_count_and_uniqueness():
    ids = np.asarray(masking.random_keep_ids(jax.random.key(3), 64, 196, masking.num_keep(196, 0.7)))
    assert ids.shape == (64, 58) and all(len(set(row)) == 58 for row in ids.tolist())
    assert ids.min() >= 0 and ids.max() < 196
    mask = masking.keep_mask(jnp.asarray(ids), 196)
    assert np.all(np.asarray(mask).sum(1) == 58)


def test_loss_weight_lists():
    assert loss_weight_list("top5", 12) == [0.0] * 7 + [0.2] * 5
    assert loss_weight_list("mid3", 5) == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert loss_weight_list("out", 3) == [0.0, 0.0, 1.0]
    assert loss_weight_list("linear_decay", 3) == [0.0, 1 / 3, 2 / 3]
    for bad, depth in (("top0", 12), ("top13", 12), ("mid12", 12), ("bottom2", 12), ("top", 12),
                       ("linear_decay", 1)):
        with pytest.raises(ValueError, match="loss_weights"):
            loss_weight_list(bad, depth)


@pytest.mark.parametrize("overrides, match", [
    ({"fusion_type": "linear", "depth": 3}, "equal depths"),
    ({"fusion_type": "simple", "depth": 3}, "equal depths"),
    ({"head_type": "conv"}, "head_type"),
    ({"mask_type": "block"}, "mask_type"),
    ({"target_norm": "pca"}, "target_norm"),
    ({"loss_type": "huber"}, "loss_type"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"img_size": 48}, "grids must match"),
])
def test_bad_options_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: _tiny(**overrides))


def test_without_a_key_each_call_draws_a_new_mask_from_the_model_stream():
    model = _tiny(mask_type="random")
    images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

    @nnx.jit
    def ids(m):
        return m(images).ids_keep

    first, second = ids(model), ids(model)  # the stream's count is model state: it advances through nnx.jit
    assert first.shape == second.shape == (4, model.num_keep)
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    key = jax.random.key(3)
    np.testing.assert_array_equal(model(images, mask_key=key).ids_keep, model(images, mask_key=key).ids_keep)


def test_bad_inputs_are_clear_errors():
    model = nnx.eval_shape(lambda: _tiny())
    images = jnp.zeros((2, 32, 32, 3))
    with pytest.raises(ValueError, match="ids_keep"):
        nnx.eval_shape(lambda m: m(images, ids_keep=jnp.zeros((2, 5), jnp.int32)), model)
    with pytest.raises(ValueError, match="ids_keep"):
        nnx.eval_shape(lambda m: m(images, ids_keep=jnp.zeros((2, 4))), model)
    with pytest.raises(ValueError, match="NCHW"):
        nnx.eval_shape(lambda m: m(jnp.zeros((2, 3, 32, 32)), mask_key=jax.random.key(0)), model)
