"""EMA: a run with ema_decay > 0 trains (the EMA does not alias the donated live params), evaluates with the EMA
weights, and `zoo.create_model(pretrained=workdir)` reloads exactly those weights."""

from __future__ import annotations

import subprocess

import jax
import numpy as np
import optax
import pytest

from tests.zoo.test_train import _env, _train_cmd
from zoo.train.metrics import read_metrics

MODEL = "vit_tiny_patch16_224"


def _digits_eval(model, *, image_size: int) -> tuple[float, float, int]:
    """(top-1, mean cross-entropy, count) over the digits test split with the eval transform, as the task computes."""
    from zoo import data as data_lib

    source = data_lib.get_source("sklearn_digits", split="test", image_size=image_size)
    transform = data_lib.make_image_transform(
        train=False, image_size=image_size, crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    examples = [transform(source[i], np.random.default_rng(0)) for i in range(len(source))]
    images = np.stack([e["image"] for e in examples])
    labels = np.asarray([e["label"] for e in examples])
    model.eval()
    logits = np.asarray(jax.jit(lambda m, x: m(x))(model, images), np.float32)
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return float(np.mean(np.argmax(logits, -1) == labels)), float(np.mean(losses)), len(labels)


def test_ema_run_reloads_with_the_logged_eval(tmp_path):
    workdir = tmp_path / "ema"
    cmd = _train_cmd(workdir, "--config.ema_decay=0.9", "--config.model.overrides.drop_path_rate=0.1",
                     "--config.num_train_steps=8", "--config.checkpoint_every=1000")  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [r for r in read_metrics(str(workdir)) if "eval/top1" in r][-1]

    import zoo
    from zoo import checkpoint

    model = zoo.create_model(MODEL, pretrained=str(workdir))
    top1, loss, count = _digits_eval(model, image_size=8)
    assert top1 == pytest.approx(logged["eval/top1"], abs=0.5 / count)  # the same predictions
    # Eval sums per-example float32 losses batch by batch; the difference is float32 rounding of those sums.
    assert loss == pytest.approx(logged["eval/loss"], rel=float(np.finfo(np.float32).eps) * count)

    # The reload is the EMA, not the live weights (which the checkpoint holds as well).
    from flax import nnx

    overrides = checkpoint.read_meta(str(workdir))["overrides"]
    abstract = nnx.state(nnx.eval_shape(lambda: zoo.create_model(MODEL, **overrides)))
    live = nnx.to_pure_dict(checkpoint.restore_model_state(str(workdir), abstract, item="model"))
    ema = nnx.to_pure_dict(nnx.state(model))
    head_difference = float(np.abs(np.asarray(live["head"]["kernel"]) - np.asarray(ema["head"]["kernel"])).max())
    assert head_difference > 1e-4 * float(np.abs(np.asarray(live["head"]["kernel"])).max())
