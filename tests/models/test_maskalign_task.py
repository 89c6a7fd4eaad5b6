"""MaskAlign through the shared trainer (task "maskalign"): the teacher loaded from its own checkpoint, frozen without
optimizer state and left out of checkpoints, the reload of a run, the official-layout export a fine-tune reads, and
the configs."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import zoo
from models.maskalign.convert import convert_maskalign_to_vit, export_official_state_dict
from models.maskalign.tasks import EXPORT_NAME, MaskAlignTask, load_teacher
from zoo.checkpoint import save_model
from zoo.train.config import base_config, validate_config

TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}
NAME = "maskalign_vit_base_patch16_vit_teacher"


def _overrides(**extra):
    return {**TINY, "loss_weights": "mean", "teacher_name": "vit_tiny_patch16_224", "teacher_overrides": dict(TINY),
            "teacher_mean": (0.5, 0.5, 0.5), "teacher_std": (0.5, 0.5, 0.5), **extra}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A "trained" classifier ViT saved as train.py does (its head is dropped by the teacher)."""
    path = tmp_path_factory.mktemp("teacher")
    vit = zoo.create_model("vit_tiny_patch16_224", rngs=nnx.Rngs(11), num_classes=10, **TINY)
    save_model(str(path), vit, meta={"model_name": "vit_tiny_patch16_224", "overrides": {"num_classes": 10, **TINY}})
    return str(path), vit


def _config(teacher: str, **updates) -> ml_collections.ConfigDict:
    config = base_config()
    config.task = "maskalign"
    config.model = ml_collections.ConfigDict({"name": NAME, "pretrained": "", "teacher": teacher,
                                              "overrides": _overrides()})
    source = {"image_size": 16}
    config.data = ml_collections.ConfigDict(
        {"train": {"name": "sklearn_digits", "split": "train", "kwargs": source},
         "eval": {"name": "sklearn_digits", "split": "test", "kwargs": source},
         "image_size": 16, "interpolation": "bilinear", "crop_pct": 1.0, "scale": (0.6, 1.0), "hflip": 0.0,
         "eval_batch_size": 128}
    )  # fmt: skip
    config.batch_size, config.num_train_steps = 16, 4
    config.log_every, config.checkpoint_every = 1, 2
    config.mesh = {"data": 1, "fsdp": 1, "model": 1}
    config.async_checkpointing = False
    config.optimizer.lr = 1e-3
    config.optimizer.frozen = (r"teacher\..*",)
    config.checkpoint_frozen = False
    config.update_from_flattened_dict(updates)
    return config


def _pure(module, *filters):
    return jax.device_get(nnx.to_pure_dict(nnx.state(module, *filters)))


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_teacher_copies_the_backbone_and_drops_the_head(teacher_dir):
    path, vit = teacher_dir
    model = zoo.create_model(NAME, rngs=nnx.Rngs(0), **_overrides())
    load_teacher(model, path, teacher_name="vit_tiny_patch16_224")
    loaded = _pure(model.teacher.vit, nnx.Param)
    source = _pure(vit, nnx.Param)
    assert "head" not in loaded
    _assert_trees_equal(loaded, {k: v for k, v in source.items() if k in loaded})
    with pytest.raises(ValueError, match="does not fit the teacher"):
        other = zoo.create_model(NAME, rngs=nnx.Rngs(0), **_overrides(teacher_overrides={**TINY, "embed_dim": 24}))
        load_teacher(other, path, teacher_name="vit_tiny_patch16_224")


def test_training_run_frozen_teacher_checkpoints_reload_and_export(teacher_dir, tmp_path):
    from zoo.train.trainer import Trainer

    path, vit = teacher_dir
    config = _config(path)
    validate_config(config)
    trainer = Trainer(config, str(tmp_path / "run"), devices=jax.devices()[:1])
    model_state = trainer.to_state(trainer.state)
    teacher_before = jax.device_get(nnx.to_pure_dict(model_state[0])["teacher"])
    source = _pure(vit, nnx.Param)
    _assert_trees_equal(teacher_before["vit"], {k: v for k, v in source.items() if k != "head"})
    # No optimizer state for the teacher: AdamW moments cover exactly the trainable params.
    assert trainer.trainable_param_count < trainer.param_count
    moments = sum(int(np.size(x)) for x in jax.tree.leaves(trainer.state[1]) if np.ndim(x) > 0)
    assert moments == 2 * trainer.trainable_param_count
    summary = trainer.run()
    assert summary["step"] == 4 and np.isfinite(summary["eval/loss"])
    assert {f"eval/layer_{i}" for i in range(2)} <= set(summary)
    teacher_after = jax.device_get(nnx.to_pure_dict(trainer.to_state(trainer.state)[0])["teacher"])
    _assert_trees_equal(teacher_before, teacher_after)

    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointer().metadata(str(tmp_path / "run" / "checkpoints" / "4" / "model"))
    tree = getattr(getattr(saved, "item_metadata", saved), "tree", getattr(saved, "item_metadata", saved))
    assert "student" in tree and "teacher" not in tree

    # create_model reloads the run: the teacher from model.teacher (through the task), the rest from the checkpoint.
    reloaded = zoo.create_model(NAME, pretrained=str(tmp_path / "run"))
    trained = trainer.eval_model()
    _assert_trees_equal(_pure(reloaded, nnx.Param), _pure(trained, nnx.Param))

    # The export holds the trained part in the official layout; a fine-tuning ViT loads its student.
    exported = dict(np.load(tmp_path / "run" / EXPORT_NAME))
    assert not any(k.startswith(("teacher", "clip_model")) for k in exported)
    assert {"distill_weights", "distill_heads.0.weight", "blocks.1.attn.qkv.weight", "pos_embed"} <= set(exported)
    ft = zoo.create_model("maskalign_vit_base_patch16_ft", pretrained=str(tmp_path / "run" / EXPORT_NAME),
                          num_classes=10, **TINY)
    student = _pure(trained.student, nnx.Param)
    ft_params = _pure(ft, nnx.Param)
    for key in ("cls_token", "patch_embed", "blocks"):
        _assert_trees_equal(ft_params[key], student[key])


@pytest.mark.parametrize("head_type", ["linear", "mlp2"])
def test_export_is_the_inverse_of_the_converter(head_type):
    from models.maskalign.convert import convert_maskalign

    model = zoo.create_model(NAME, rngs=nnx.Rngs(3), **_overrides(head_type=head_type))
    state_dict = export_official_state_dict(model)
    teacher_keys = {}  # the converter wants the teacher too: give it the HF ViT names of the same weights
    vit = model.teacher.vit
    for key, value in export_official_state_dict_for_teacher(vit).items():
        teacher_keys[f"dino_model.{key}"] = value
    rebuilt = convert_maskalign({**state_dict, **teacher_keys}, nnx.eval_shape(lambda: model))
    mine = _pure(model, nnx.Not(nnx.RngState))
    theirs = _pure(rebuilt, nnx.Not(nnx.RngState))
    _assert_trees_equal({k: v for k, v in mine.items() if k != "teacher"},
                        {k: v for k, v in theirs.items() if k != "teacher"})
    ft = convert_maskalign_to_vit(state_dict, nnx.eval_shape(
        lambda: zoo.create_model("maskalign_vit_base_patch16_ft", rngs=nnx.Rngs(0), num_classes=10, **TINY)))
    _assert_trees_equal(_pure(ft, nnx.Param)["blocks"], mine["student"]["blocks"])


def export_official_state_dict_for_teacher(vit) -> dict[str, np.ndarray]:
    """The teacher ViT under HF ViTModel 4.x names (built by hand from the zoo weights, for the round trip)."""
    p = _pure(vit, nnx.Param)
    d = p["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": p["cls_token"],
        "embeddings.position_embeddings": p["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": p["patch_embed"]["proj"]["kernel"].transpose(3, 2, 0, 1),
        "embeddings.patch_embeddings.projection.bias": p["patch_embed"]["proj"]["bias"],
        "layernorm.weight": p["norm"]["scale"],
        "layernorm.bias": p["norm"]["bias"],
    }
    for i, block in p["blocks"].items():
        base = f"encoder.layer.{i}."
        qkv_w, qkv_b = block["attn"]["qkv"]["kernel"].T, block["attn"]["qkv"]["bias"]
        for j, name in enumerate(("query", "key", "value")):
            out[f"{base}attention.attention.{name}.weight"] = qkv_w[j * d:(j + 1) * d]
            out[f"{base}attention.attention.{name}.bias"] = qkv_b[j * d:(j + 1) * d]
        out[f"{base}attention.output.dense.weight"] = block["attn"]["proj"]["kernel"].T
        out[f"{base}attention.output.dense.bias"] = block["attn"]["proj"]["bias"]
        out[f"{base}layernorm_before.weight"] = block["norm1"]["scale"]
        out[f"{base}layernorm_before.bias"] = block["norm1"]["bias"]
        out[f"{base}layernorm_after.weight"] = block["norm2"]["scale"]
        out[f"{base}layernorm_after.bias"] = block["norm2"]["bias"]
        out[f"{base}intermediate.dense.weight"] = block["mlp"]["fc1"]["kernel"].T
        out[f"{base}intermediate.dense.bias"] = block["mlp"]["fc1"]["bias"]
        out[f"{base}output.dense.weight"] = block["mlp"]["fc2"]["kernel"].T
        out[f"{base}output.dense.bias"] = block["mlp"]["fc2"]["bias"]
    return out


@pytest.mark.parametrize("variant", ["digits", "b16_in1k"])
def test_pretraining_configs_freeze_the_teacher_and_leave_it_out_of_checkpoints(variant):
    from configs.maskalign import get_config

    config = get_config(variant)  # (every variant validates: tests/zoo/test_strict_config.py)
    assert config.task == "maskalign"
    assert config.optimizer.frozen == (r"teacher\..*",) and not config.checkpoint_frozen
    assert MaskAlignTask(config).pretrained_source() == (config.model.teacher or None)
    with pytest.raises(ValueError, match="unknown configs/maskalign.py variant"):
        get_config("digitz")


def test_official_recipe_numbers():
    from configs.maskalign import get_config

    pre = get_config("b16_in1k")
    assert pre.batch_size == 1024 and pre.optimizer.lr == pytest.approx(6e-4)
    assert (pre.optimizer.b1, pre.optimizer.b2, pre.optimizer.weight_decay) == (0.9, 0.95, 0.05)
    steps_per_epoch = 1281167 // 1024
    assert pre.num_train_steps == 200 * steps_per_epoch and pre.optimizer.warmup_steps == 20 * steps_per_epoch
    assert pre.data.scale == (0.2, 1.0) and pre.data.hflip == 0.5 and pre.model.overrides.drop_path_rate == 0.1
    ft = get_config("b16_in1k_finetune")
    assert ft.optimizer.layer_decay == 0.55 and ft.optimizer.lr == pytest.approx(1.2e-3)
    assert ft.num_train_steps == 100 * steps_per_epoch and ft.model.overrides.drop_path_rate == 0.2
    assert (ft.data.mixup, ft.data.cutmix, ft.data.label_smoothing, ft.data.reprob) == (0.8, 1.0, 0.1, 0.25)
