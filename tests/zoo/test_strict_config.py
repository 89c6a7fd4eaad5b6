"""Strict configs: every key of every config file is read by the trainer or the task; a typo is an error naming the
closest valid key, raised before anything is written."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import ml_collections
import pytest

from tests.zoo.test_train import ROOT, _env
from zoo.tasks import get_task
from zoo.train.config import validate_config

# Every variant of every config file (see each file's docstring); a variant with a ":batch" suffix too.
VARIANTS = {
    "vit": ("digits", "digits_fast", "b16_in1k"),
    "fcaformer": ("digits", "digits_fast", "l1_in1k", "l2_in1k", "l3_in1k", "l4_in1k", "l2_in1k:512"),
    "sam2": ("vtest", "vtest_fast", "vtest_video", "vtest_video_fast"),
    "samwise": ("vtest", "vtest_fast", "vtest_sam2init", "refcoco_pretrain", "ref_youtube_vos", "mevis"),
    "ila": ("b16_k400_8f", "b16_ssv2_8f", "direction", "direction_no_ila", "direction_frame_avg", "direction_fast",
            "pan", "pan_no_ila", "pan_frame_avg", "pan_fast"),
    "maskalign": ("digits", "digits_fast", "digits_random_mask", "digits_finetune", "digits_scratch", "b16_in1k", "b16_in1k_finetune"),
    "gs3d": ("graphdeco", "tiny"),
    "wildgs": ("paper", "wild_duck", "tiny"),
}


def _config_files() -> set[str]:
    names = {n[:-3] for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".py")}
    return names - {"__init__", "common"}


def test_every_config_file_is_listed():
    assert _config_files() == set(VARIANTS), "add the new config file's variants to VARIANTS"


@pytest.mark.parametrize(("module", "variant"), [(m, v) for m, vs in VARIANTS.items() for v in vs])
def test_every_config_variant_validates(module, variant):
    config = importlib.import_module(f"configs.{module}").get_config(variant)
    task_cls = get_task(config.task)
    if not any("config_keys" in vars(cls) for cls in task_cls.__mro__[:-1] if cls.__name__ != "Task"):
        pytest.xfail(f"task {task_cls.__name__} declares no config_keys of its own yet")
    validate_config(config)


def _digits():
    from configs.vit import get_config

    return get_config("digits_fast")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: setattr(c.optimizer, "wieght_decay", 0.1),
         "unknown config key 'optimizer.wieght_decay'; did you mean 'optimizer.weight_decay'?"),
        (lambda c: setattr(c.data, "lable_smoothing", 0.1),
         "unknown config key 'data.lable_smoothing'; did you mean 'data.label_smoothing'?"),
        (lambda c: setattr(c, "ema_dacay", 0.9), "did you mean 'ema_decay'?"),
        (lambda c: setattr(c.data.train, "spilt", "train"), "did you mean 'data.train.split'?"),
        (lambda c: setattr(c.optimizer, "groups", ({"pattern": "head.*", "lr_mul": 2.0},)),
         "unknown config key 'optimizer.groups[0].lr_mul'; did you mean 'optimizer.groups[0].lr_mult'?"),
        (lambda c: setattr(c.optimizer, "groups", ({"lr": 2.0},)), "optimizer.groups[0].pattern is missing"),
    ],
)  # fmt: skip
def test_unknown_keys_name_the_closest_valid_key(edit, message):
    config = _digits()
    edit(config)
    with pytest.raises(ValueError, match=None) as info:
        validate_config(config)
    assert message in str(info.value)


def test_free_form_sections_are_not_checked():
    config = _digits()
    config.model.overrides.anything_the_builder_takes = 1
    config.data.train.kwargs.some_source_option = "x"
    config.optimizer.groups = ({"pattern": r"head\..*", "lr_mult": 10.0, "schedule": "constant"},)
    validate_config(config)


def test_a_task_declares_its_extra_keys():
    from zoo.tasks.classification import ClassificationTask

    class WithExtra(ClassificationTask):
        config_keys = {"model": {"teacher": {"name": None, "pretrained": None}}}  # noqa: RUF012

    config = _digits()
    config.model.teacher = ml_collections.ConfigDict({"name": "x", "pretrained": ""})
    validate_config(config, WithExtra)  # inherited keys (data.*) and the new ones
    config.model.teacher.pretraind = ""
    with pytest.raises(ValueError, match="did you mean 'model.teacher.pretrained'"):
        validate_config(config, WithExtra)


def test_typo_in_a_config_file_stops_train_py_before_writing(tmp_path):
    config_file = tmp_path / "typo_config.py"
    config_file.write_text(
        "from configs.vit import get_config as vit_config\n\n\n"
        "def get_config(arg=None):\n"
        "    config = vit_config('digits_fast')\n"
        "    config.optimizer.wieght_decay = 0.1\n"
        "    return config\n"
    )
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config", str(config_file), "--workdir", str(workdir)],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "did you mean 'optimizer.weight_decay'?" in result.stderr, result.stderr[-2000:]
    assert not workdir.exists()
