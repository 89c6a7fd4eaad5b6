"""The video-classification task: CE + the model's auxiliary losses, mixup on clips, the multi-view eval (the summed
per-view softmax equals averaging the views by hand), and a short run through the shared trainer on real clips."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from zoo.tasks import get_task
from zoo.tasks.video_classification import VideoClassificationTask, split_output, summed_view_scores
from zoo.train.config import base_config


class Out(NamedTuple):
    logits: jax.Array
    aux_losses: dict


class TinyVideoNet(nnx.Module):
    """Per-frame mean colour and the mean frame-to-frame change -> linear: a model that can see motion."""

    def __init__(self, num_classes: int, rngs: nnx.Rngs, aux: bool = True):
        self.fc = nnx.Linear(6, num_classes, rngs=rngs)
        self.aux = aux

    def __call__(self, video, train: bool = False):
        colour = video.mean(axis=(1, 2, 3))
        motion = (video[:, 1:] - video[:, :-1]).mean(axis=(1, 2, 3))
        logits = self.fc(jnp.concatenate([colour, motion], -1))
        if not self.aux:
            return logits
        return Out(logits, {"cos": jnp.asarray([0.25, 0.5]), "extra": jnp.asarray(0.125)})


def _config(**updates) -> ml_collections.ConfigDict:
    config = base_config()
    config.task = "video_classification"
    config.model = ml_collections.ConfigDict({"name": "vit_tiny_patch16_224", "overrides": {}, "pretrained": "",
                                              "aux_loss_weight": 2.0})
    source = {"num_frames": 4, "short_side": 32}
    config.data = ml_collections.ConfigDict(
        {"train": {"name": "video_direction_speed", "split": "train", "kwargs": source},
         "eval": {"name": "video_direction_speed", "split": "eval", "kwargs": source},
         "num_classes": 6, "image_size": 24, "color_jitter": 0.0, "grayscale": 0.0, "reprob": 0.0,
         "label_smoothing": 0.0, "eval_batch_size": 32}
    )  # fmt: skip
    config.batch_size, config.num_train_steps, config.log_every = 8, 3, 1
    config.mesh = {"data": 1, "fsdp": 1, "model": 1}
    config.async_checkpointing = False
    config.update_from_flattened_dict(updates)
    return config


class TinyTask(VideoClassificationTask):
    def build_model(self, rngs):
        return TinyVideoNet(self.num_classes, rngs)


def test_registered_and_declares_its_keys():
    assert get_task("video_classification") is VideoClassificationTask
    from zoo.train.config import validate_config

    validate_config(_config(), TinyTask)
    with pytest.raises(ValueError, match="did you mean 'data.num_crops'"):
        validate_config(_config(**{"data.num_crop": 3}), TinyTask)


def test_loss_adds_the_weighted_aux_losses():
    task = TinyTask(_config())
    model = task.build_model(nnx.Rngs(0))
    video = jax.random.normal(jax.random.key(0), (3, 4, 8, 8, 3))
    labels = jnp.asarray([0, 5, 2])
    loss, metrics = task.loss(model, {"video": video, "label": labels})
    ce = optax.softmax_cross_entropy_with_integer_labels(model(video).logits, labels).mean()
    np.testing.assert_allclose(float(metrics["ce"]), float(ce), rtol=1e-6)
    np.testing.assert_allclose(float(loss), float(ce) + 2.0 * (0.25 + 0.5 + 0.125), rtol=1e-6)
    assert float(metrics["aux/cos"]) == pytest.approx(0.75) and float(metrics["aux/extra"]) == pytest.approx(0.125)
    logits, aux = split_output(jnp.zeros((2, 6)))
    assert aux == {} and logits.shape == (2, 6)
    with pytest.raises(TypeError, match="logits"):
        split_output({"scores": 1})


def test_multi_view_eval_equals_averaging_the_views_by_hand():
    task = TinyTask(_config())
    model = TinyVideoNet(6, nnx.Rngs(1), aux=False)
    views = jax.random.normal(jax.random.key(1), (5, 6, 4, 8, 8, 3))  # 5 videos x (2 clips x 3 crops)
    labels = jnp.asarray([0, 1, 2, 3, 4])
    mask = jnp.asarray([1.0, 1.0, 1.0, 1.0, 0.0])  # the last row is padding
    sums = task.eval_sums(model, {"video": views, "label": labels, "mask": mask})
    by_hand = np.stack([np.mean([np.asarray(jax.nn.softmax(model(views[:, v]), -1))[b] for v in range(6)], axis=0)
                        for b in range(5)])
    predicted = by_hand.argmax(-1)
    assert float(sums["count"]) == 4
    assert float(sums["top1"]) == float(np.sum((predicted == np.asarray(labels))[:4]))
    expected_nll = -np.log(by_hand[np.arange(5), np.asarray(labels)])[:4].sum()
    np.testing.assert_allclose(float(sums["loss"]), expected_nll, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(summed_view_scores(model(views.reshape(-1, 4, 8, 8, 3)), 6)) / 6, by_hand,
                               rtol=1e-5, atol=1e-7)
    single = task.eval_sums(model, {"video": views[:, 0], "label": labels, "mask": mask})
    assert float(single["count"]) == 4
    with pytest.raises(ValueError, match="eval videos"):
        task.eval_sums(model, {"video": views[0, 0], "label": labels, "mask": mask})


@pytest.mark.parametrize("mixup", [0.0, 0.8])
def test_short_run_on_real_clips(tmp_path, mixup):
    from zoo.train.trainer import Trainer

    config = _config(**{"data.mixup": mixup, "data.label_smoothing": 0.1 if mixup else 0.0})
    trainer = Trainer(config, str(tmp_path), task=TinyTask(config), devices=jax.devices()[:1])
    summary = trainer.run()
    assert summary["step"] == 3 and 0.0 <= summary["eval/top1"] <= 1.0
    assert np.isfinite(summary["eval/loss"])


def test_epoch_reaches_models_that_take_it_and_resumes_with_the_iterator():
    from zoo.tasks.video_classification import EpochIterator, accepts_keyword

    class Inner:
        def __init__(self):
            self.i = 0

        def __next__(self):
            self.i += 1
            return {"video": np.zeros((2, 1)), "label": np.zeros((2,), np.int32)}

        def get_state(self):
            return {"i": self.i}

        def set_state(self, state):
            self.i = state["i"]

    iterator = EpochIterator(Inner(), steps_per_epoch=3)
    epochs = [int(next(iterator)["epoch"][0]) for _ in range(7)]
    assert epochs == [0, 0, 0, 1, 1, 1, 2]
    state = iterator.get_state()
    resumed = EpochIterator(Inner(), steps_per_epoch=3)
    resumed.set_state(state)
    assert int(next(resumed)["epoch"][0]) == 2 and resumed.inner.i == 8

    class EpochNet(TinyVideoNet):
        def __call__(self, video, train: bool = False, epoch=None):
            logits = super().__call__(video, train=train).logits
            return logits + (0.0 if epoch is None else 100.0 * epoch)

    model = EpochNet(6, nnx.Rngs(0))
    assert accepts_keyword(model, "epoch") and not accepts_keyword(TinyVideoNet(6, nnx.Rngs(0)), "epoch")
    task = TinyTask(_config())
    video = jnp.zeros((2, 4, 8, 8, 3))
    seen = task.call_model(model, video, {"epoch": jnp.asarray([3, 3])}, train=True)
    np.testing.assert_allclose(np.asarray(seen), np.asarray(model(video)) + 300.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(task.call_model(model, video, {"epoch": jnp.asarray([3, 3])}, train=False)),
                               np.asarray(model(video)), rtol=1e-6)
