"""The shared trainer: config-file CLI, exact resume after SIGTERM, NaN guard, multi-device and multi-process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from zoo.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A very small ViT on the embedded digits: compiles and steps fast on 2 cores.
TINY = [
    "--config.model.overrides.img_size=8",
    "--config.model.overrides.patch_size=4",
    "--config.model.overrides.embed_dim=32",
    "--config.model.overrides.depth=1",
    "--config.model.overrides.num_heads=2",
    "--config.data.image_size=8",
    "--config.data.train.kwargs.image_size=8",
    "--config.data.eval.kwargs.image_size=8",
    "--config.batch_size=32",
    "--config.data.eval_batch_size=120",
]


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    return env


def _train_cmd(workdir, *extra):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/vit.py:digits_fast"),
            "--workdir", str(workdir), *TINY, *extra]  # fmt: skip


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r}


def test_bad_config_key_lists_valid_keys(tmp_path):
    result = subprocess.run(
        _train_cmd(tmp_path, "--config.optimizer.lrr=0.1"),
        capture_output=True, text=True, env=_env(), timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "lrr" in result.stderr and "Did you mean" in result.stderr and "lr" in result.stderr


def test_unknown_model_in_config_is_clear(tmp_path):
    result = subprocess.run(
        _train_cmd(tmp_path, "--config.model.name=vit_tiny_patch16_2244"),
        capture_output=True, text=True, env=_env(), timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Unknown model 'vit_tiny_patch16_2244'" in result.stderr and "vit_tiny_patch16_224" in result.stderr


def test_sigterm_then_resume_gives_the_same_losses(tmp_path):
    steps = ["--config.num_train_steps=24", "--config.checkpoint_every=1000", "--config.log_every=1"]
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference, *steps), check=True, env=_env(), timeout=300, capture_output=True)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 25))

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(interrupted, *steps), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(_losses(interrupted)) < 6 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
    stopped_at = max(_losses(interrupted))
    assert stopped_at < 24, "the run finished before SIGTERM; the test did not interrupt it"
    assert b"Run the same command again to resume" in stderr

    subprocess.run(_train_cmd(interrupted, *steps), check=True, env=_env(), timeout=300, capture_output=True)
    resumed = _losses(interrupted)
    assert sorted(resumed) == list(range(1, 25))
    np.testing.assert_array_equal([resumed[s] for s in range(1, 25)], [expected[s] for s in range(1, 25)])

    # The final checkpoint reloads through the registry and reproduces the logged eval accuracy.
    import zoo
    from zoo.train.trainer import Trainer  # noqa: F401  (imports the task registry)

    logged = [r for r in read_metrics(str(interrupted)) if "eval/top1" in r][-1]["eval/top1"]
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=str(interrupted))
    assert _digits_top1(model, image_size=8) == pytest.approx(logged, abs=1e-6)


def _digits_top1(model, *, image_size: int) -> float:
    from zoo import data as data_lib

    source = data_lib.get_source("sklearn_digits", split="test", image_size=image_size)
    transform = data_lib.make_image_transform(
        train=False, image_size=image_size, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    images, labels = [], []
    for i in range(len(source)):
        example = transform(source[i], np.random.default_rng(0))
        images.append(example["image"])
        labels.append(example["label"])
    model.eval()
    logits = jax.jit(lambda m, x: m(x))(model, np.stack(images))
    return float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


# ----------------------------------------------------------------------------------------------------------------------
# In-process trainer tests (8 fake CPU devices from tests/conftest.py)
# ----------------------------------------------------------------------------------------------------------------------


def _tiny_config(**updates):
    from configs.vit import get_config

    config = get_config("digits_fast")
    overrides = config.model.overrides
    overrides.img_size, overrides.patch_size, overrides.embed_dim = 8, 4, 32
    overrides.depth, overrides.num_heads = 1, 2
    config.data.image_size = 8
    config.data.train.kwargs.image_size = 8
    config.data.eval.kwargs.image_size = 8
    config.batch_size = 32
    config.checkpoint_every = 0
    config.async_checkpointing = False
    config.fsdp_min_size = 1
    for key, value in updates.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _params_after(config, workdir, devices):
    from flax import nnx

    from zoo.train.trainer import Trainer

    trainer = Trainer(config, str(workdir), devices=devices)
    trainer.run()
    return jax.device_get(nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param)))


def test_eight_devices_are_present():
    assert jax.device_count() == 8, "multi-device tests need 8 CPU devices (tests/conftest.py sets jax_num_cpu_devices)"


@pytest.fixture(scope="module")
def one_device_params(tmp_path_factory):
    config = _tiny_config(num_train_steps=3, log_every=1, mesh={"data": 1, "fsdp": 1, "model": 1})
    return _params_after(config, tmp_path_factory.mktemp("one_device"), jax.devices()[:1])


def _relative_difference(reference, other) -> float:
    """max |a - b| over all parameters, relative to the largest parameter magnitude."""
    pairs = list(zip(jax.tree.leaves(reference), jax.tree.leaves(other), strict=True))
    largest = max(float(np.abs(a).max()) for a, _ in pairs)
    return max(float(np.abs(a - b).max()) for a, b in pairs) / largest


@pytest.mark.parametrize("mesh", [{"data": 8, "fsdp": 1, "model": 1}, {"data": 1, "fsdp": 8, "model": 1},
                                  {"data": 2, "fsdp": 2, "model": 2}])  # fmt: skip
def test_data_parallel_and_fsdp_match_one_device(tmp_path, mesh, one_device_params):
    assert jax.device_count() == 8
    config = _tiny_config(num_train_steps=3, log_every=1, mesh=mesh)
    sharded = _params_after(config, tmp_path, jax.devices())
    assert _relative_difference(one_device_params, sharded) <= 1e-5


@pytest.mark.parametrize("mesh", [{"data": 1, "fsdp": 1, "model": 1}, {"data": 2, "fsdp": 2, "model": 2}])
def test_frozen_parameters_stay_fixed_in_training(tmp_path, mesh):
    from flax import nnx

    from zoo.train.trainer import Trainer

    config = _tiny_config(num_train_steps=2, log_every=1, mesh=mesh, **{"optimizer.frozen": (r"blocks\.0\..*",)})
    trainer = Trainer(config, str(tmp_path), devices=jax.devices()[: 1 if mesh["data"] == 1 else 8])
    before = jax.device_get(nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param)))
    trainer.run()
    after = jax.device_get(nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param)))
    for a, b in zip(jax.tree.leaves(before["blocks"][0]), jax.tree.leaves(after["blocks"][0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(np.abs(before["head"]["kernel"] - after["head"]["kernel"]).max()) > 0


def test_bf16_compute_keeps_f32_params_and_trains(tmp_path):
    from flax import nnx

    from zoo.train.trainer import Trainer

    config = _tiny_config(num_train_steps=3, log_every=1, dtype="bfloat16", mesh={"data": 1, "fsdp": 1, "model": 1})
    trainer = Trainer(config, str(tmp_path), devices=jax.devices()[:1])
    trainer.run()
    params = nnx.to_pure_dict(nnx.filter_state(trainer.to_state(trainer.state)[0], nnx.Param))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float32")}
    losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))


def test_gradient_accumulation_matches_full_batch(tmp_path):
    steps = {"num_train_steps": 2, "log_every": 1, "mesh": {"data": 1, "fsdp": 1, "model": 1}}
    full = _params_after(_tiny_config(**steps), tmp_path / "full", jax.devices()[:1])
    accumulated = _params_after(_tiny_config(**steps, **{"optimizer.accumulation_steps": 4}), tmp_path / "acc",
                                jax.devices()[:1])  # fmt: skip
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(accumulated), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    from zoo.tasks.classification import ClassificationTask
    from zoo.train.trainer import NonFiniteLossError, Trainer

    class ExplodingTask(ClassificationTask):
        def loss(self, model, batch):
            loss, metrics = super().loss(model, batch)
            step = model.head.bias.get_value()  # any array works: make step 5's loss NaN through the data
            del step
            poisoned = jax.numpy.where(batch["label"][0] < 0, jax.numpy.nan, loss)
            return poisoned, metrics

    config = _tiny_config(num_train_steps=10, checkpoint_every=2, mesh={"data": 1, "fsdp": 1, "model": 1})
    task = ExplodingTask(config)
    original = task.train_iterator

    def poisoned_iterator(**kwargs):
        inner = original(**kwargs)

        class Poison:
            def __iter__(self):
                return self

            def __next__(self):
                batch = next(inner)
                if inner.step == 5:
                    batch = dict(batch, label=np.full_like(batch["label"], -1))
                return batch

            def get_state(self):
                return inner.get_state()

            def set_state(self, state):
                inner.set_state(state)

        return Poison()

    task.train_iterator = poisoned_iterator
    trainer = Trainer(config, str(tmp_path), task=task, devices=jax.devices()[:1])
    with pytest.raises(NonFiniteLossError, match=r"step 5.*loss.*intact"):
        trainer.run()
    import zoo

    assert max(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == 4
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=str(tmp_path))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(jax.tree.map(np.asarray, model)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_and_agree(tmp_path):
    port = _free_port()
    worker = os.path.join(ROOT, "tests", "zoo", "distributed_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, f"127.0.0.1:{port}", str(i), str(tmp_path / "run"), str(tmp_path / f"out{i}.json")],
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=400)[0].decode() for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert results[0]["device_count"] == 4 and results[0]["process_count"] == 2
    assert results[0]["param_checksum"] == pytest.approx(results[1]["param_checksum"], rel=1e-6)
    assert np.isfinite(results[0]["param_checksum"])


@pytest.mark.slow
def test_main_job_trains_vit_on_real_digits_to_95_percent(tmp_path):
    """The README's `make train` job: configs/vit.py:digits on scikit-learn's real digits, held-out top-1 >= 95%."""
    workdir = tmp_path / "vit_digits"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/vit.py:digits"),
           "--workdir", str(workdir)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1800, check=True)
    assert "wall time" in result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["eval/top1"] >= 0.95, summary
    import zoo

    model = zoo.create_model("vit_tiny_patch16_224", pretrained=str(workdir))
    assert _digits_top1(model, image_size=16) == pytest.approx(summary["eval/top1"], abs=1e-6)
