"""ILA through the shared trainer: the baselines of the offline comparison (ILA blocks off; a frame-averaging head),
the X-CLIP head's class texts fed by the task, class-name files, the configs and a short run on real clips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import zoo
from models.ila.groups import group_param_counts
from models.ila.tasks import ILAVideoTask, read_class_names
from zoo.train.config import validate_config

TINY = {"num_frames": 4, "img_size": 32, "patch_size": 8, "vision_width": 32, "vision_layers": 2, "vision_heads": 2,
        "embed_dim": 32, "ila_hidden": 16, "mit_heads": 2}  # fmt: skip


def _ssv2(**overrides):
    return zoo.create_model("ila_vit_b16_ssv2_8f", rngs=nnx.Rngs(0), **{**TINY, "num_classes": 6, "head_dropout": 0.0,
                                                                         **overrides})


def _video(seed=0, batch=2):
    return jax.random.normal(jax.random.key(seed), (batch, 4, 32, 32, 3))


def test_ila_blocks_off_is_plain_clip_with_mit():
    ila, plain = _ssv2(), _ssv2(temporal="none")
    counts = group_param_counts(nnx.state(plain, nnx.Param))
    assert counts["message"] == counts["temporal"] == 0 and counts["mit"] > 0
    assert group_param_counts(nnx.state(ila, nnx.Param))["message"] > 0
    out = plain(_video())
    assert out.logits.shape == (2, 6) and out.cos_losses.shape == (0,) and float(out.aux_loss) == 0.0
    assert out.aux_losses == {"cos": out.aux_loss}
    # MIT still models time: reversing the frames changes the prediction of the no-ILA baseline.
    reversed_logits = plain(_video()[:, ::-1]).logits
    assert float(jnp.abs(reversed_logits - out.logits).max()) > 1e-4
    with pytest.raises(ValueError, match="temporal must be one of"):
        _ssv2(temporal="tsm")


def test_frame_averaging_head_ignores_frame_order():
    model = _ssv2(temporal="none", mit_layers=0)
    video = _video(1)
    permuted = video[:, jnp.asarray([2, 0, 3, 1])]
    np.testing.assert_allclose(np.asarray(model(permuted).logits), np.asarray(model(video).logits), rtol=1e-5,
                               atol=1e-6)


def test_read_class_names(tmp_path):
    (tmp_path / "labels.csv").write_text("id,name\n1,b class\n0,a class\n")
    (tmp_path / "labels.txt").write_text("a\n\nb\n")
    (tmp_path / "labels.json").write_text('{"b": "1", "a": "0"}')
    assert read_class_names(str(tmp_path / "labels.csv")) == ["a class", "b class"]
    assert read_class_names(str(tmp_path / "labels.txt")) == ["a", "b"]
    assert read_class_names(str(tmp_path / "labels.json")) == ["a", "b"]


def _k400_config(tmp_path, names):
    from configs.ila import get_config

    (tmp_path / "names.txt").write_text("\n".join(names))
    config = get_config("direction_fast")
    config.model.name = "ila_vit_b32_k400_8f"
    config.model.overrides = {**TINY, "num_frames": 8, "text_width": 32, "text_layers": 1, "text_heads": 2, "context_length": 77,
                              "prompt_heads": 2}
    config.model.class_names_file = str(tmp_path / "names.txt")
    config.model.bpe_path = ""
    return config


def test_the_xclip_head_gets_the_class_texts(tmp_path):
    from models.clip.tokenizer import ClipTokenizer

    names = ["forward 1x", "forward 2x", "forward 4x", "reversed 1x", "reversed 2x", "reversed 4x"]
    config = _k400_config(tmp_path, names)
    task = ILAVideoTask(config)
    np.testing.assert_array_equal(task.text_tokens(), ClipTokenizer()(names))
    model = zoo.create_model("ila_vit_b32_k400_8f", rngs=nnx.Rngs(0), **dict(config.model.overrides))
    video = jax.random.normal(jax.random.key(2), (2, 8, 32, 32, 3))
    loss, metrics = task.loss(model, {"video": video, "label": jnp.asarray([0, 5]), "epoch": jnp.asarray([31, 31])})
    assert np.isfinite(float(loss)) and float(metrics["aux/cos"]) >= 0
    direct = model(video, text_tokens=jnp.asarray(task.text_tokens()))
    sums = task.eval_sums(model, {"video": video, "label": jnp.asarray([0, 5]), "mask": jnp.ones(2)})
    assert float(sums["top1"]) == float(np.sum(np.asarray(direct.logits).argmax(-1) == np.asarray([0, 5])))
    config.model.class_names_file = ""
    config.data.num_classes = 7
    with pytest.raises(ValueError, match="6 class names but data.num_classes = 7"):
        ILAVideoTask(config).text_tokens()


def test_official_configs_use_the_official_groups():
    from configs.ila import get_config
    from models.ila.groups import FROZEN_PATTERNS, official_param_groups

    for variant in ("b16_k400_8f", "b16_ssv2_8f"):
        config = get_config(variant)
        assert tuple(config.optimizer.frozen) == FROZEN_PATTERNS
        assert [dict(g) for g in config.optimizer.groups] == [dict(g) for g in official_param_groups()]
        assert (config.optimizer.b1, config.optimizer.b2, config.batch_size) == (0.9, 0.98, 256)
        assert config.data.eval.kwargs.num_clips == 4 and config.data.num_crops == 3
        assert ILAVideoTask(config).pretrained_source() is None  # until model.clip_weights / pretrained is given
        config.model.clip_weights = "clip.safetensors"
        assert ILAVideoTask(config).pretrained_source() == "clip.safetensors"


def test_direction_fast_trains_on_real_clips(tmp_path):
    from configs.ila import get_config
    from zoo.train.trainer import Trainer

    config = get_config("direction_fast")
    config.model.overrides.update({"vision_layers": 1, "vision_width": 32, "embed_dim": 32, "ila_hidden": 16})
    config.num_train_steps = 2
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "model": 1})
    config.async_checkpointing = False
    validate_config(config)
    summary = Trainer(config, str(tmp_path), devices=jax.devices()[:1]).run()
    assert summary["step"] == 2 and 0.0 <= summary["eval/top1"] <= 1.0
