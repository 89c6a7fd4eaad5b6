"""Video classification: any registered video model, `model(video_BTHWC, train=...)`, softmax cross-entropy (soft
targets for clip mixup / cutmix / label smoothing) plus the auxiliary losses the model returns; top-1 / top-5 over the
multi-view test protocol (the softmax of each view summed, as ILA / X-CLIP).

The model returns logits [B, K], or an object with `.logits` and `.aux_losses` (a scalar, an array summed, or a dict
name -> scalar, each logged as `aux/<name>`): ILA's per-layer cosine (mutual-information) losses. The training loss
is CE + `model.aux_loss_weight` x sum(aux losses) (the official weight is 1). A model whose `__call__` takes `epoch`
gets the 0-based epoch of the batch (batches seen // (train set size // batch size)) during training.

Eval: a batch's "video" is (B, T, H, W, C) for one view, or (B, V, T, H, W, C) for V = clips x crops views (a source
with `num_clips` > 1 and/or `data.num_crops` = 3); each view is classified and the per-view softmaxes are summed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from zoo import data as data_lib
from zoo.data.video_transforms import ILA_SCALES
from zoo.tasks import register_task
from zoo.tasks.base import Task
from zoo.tasks.classification import mixup_from_config

VIDEO_KEY = "video"


def split_output(out: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(logits, {name: scalar aux loss}) of a video model's output (see the module docstring)."""
    if isinstance(out, jax.Array) or hasattr(out, "ndim"):
        return out, {}
    if not hasattr(out, "logits"):
        raise TypeError(f"a video model must return logits or an object with .logits (and .aux_losses); got "
                        f"{type(out).__name__}")
    aux = getattr(out, "aux_losses", None)
    if aux is None:
        losses: dict[str, jax.Array] = {}
    elif isinstance(aux, Mapping):
        losses = {str(k): jnp.sum(jnp.asarray(v, jnp.float32)) for k, v in aux.items()}
    else:
        aux = jnp.asarray(aux, jnp.float32)
        losses = {"sum": jnp.sum(aux)} if aux.ndim == 0 else {str(i): v for i, v in enumerate(aux.reshape(-1))}
    return out.logits, losses


def accepts_keyword(fn: Any, name: str) -> bool:
    """Whether callable `fn` (a module: its `__call__`) takes keyword `name`."""
    import inspect

    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class EpochIterator:
    """Adds "epoch" (int32, one per row: batches seen // steps_per_epoch, 0-based) to every batch of `inner`, for
    models with an epoch schedule (ILA's mask jitter decay); its state resumes with the inner iterator's."""

    def __init__(self, inner, steps_per_epoch: int):
        self.inner, self.steps_per_epoch, self.count = inner, max(int(steps_per_epoch), 1), 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        batch = dict(next(self.inner))
        rows = len(next(iter(batch.values())))
        batch["epoch"] = np.full((rows,), self.count // self.steps_per_epoch, np.int32)
        self.count += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"inner": self.inner.get_state(), "count": self.count}

    def set_state(self, state: dict[str, Any]) -> None:
        self.inner.set_state(state["inner"])
        self.count = int(state["count"])

    @property
    def num_skipped(self) -> int:
        return getattr(self.inner, "num_skipped", 0)


def summed_view_scores(logits: jax.Array, num_views: int) -> jax.Array:
    """(B*V, K) logits, video-major (`zoo.data.flatten_views`'s layout) -> (B, K) sum of the views' softmaxes."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return probs.reshape(-1, num_views, probs.shape[-1]).sum(axis=1)


@register_task("video_classification")
class VideoClassificationTask(Task):
    """A registered video classifier on a `zoo.data` video source (`videofolder:`, `videolist:`, `ssv2:`,
    `tfdsvideo:`, `video_direction_speed`, ...).

    Config: model.{name, overrides, pretrained, aux_loss_weight}; data.{train, eval (sources; their kwargs set
    num_frames, num_clips, short_side), num_classes, image_size, scales, color_jitter, color_jitter_per_frame,
    grayscale, reprob, remode, mean, std, interpolation, num_crops (eval: 1 centre crop or 3 crops), mixup, cutmix,
    mixup_prob, switch_prob, label_smoothing, worker_count, eval_batch_size}.
    """

    config_keys: ClassVar[dict[str, Any]] = {
        "model": {"aux_loss_weight": None},
        "data": dict.fromkeys(
            ("num_classes", "image_size", "scales", "color_jitter", "color_jitter_per_frame", "grayscale", "reprob",
             "remode", "mean", "std", "interpolation", "num_crops", "mixup", "cutmix", "mixup_prob", "switch_prob",
             "label_smoothing", "worker_count")
        ),
    }

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.data_config = config.data
        self.num_classes = int(config.data.num_classes)
        self.aux_loss_weight = float(config.model.get("aux_loss_weight", 1.0))

    # ---- data ----------------------------------------------------------------------------------------------------
    def _transform(self, train: bool):
        d = self.data_config
        kwargs = {
            "image_size": int(d.image_size),
            "mean": tuple(d.get("mean", data_lib.IMAGENET_MEAN)),
            "std": tuple(d.get("std", data_lib.IMAGENET_STD)),
            "interpolation": d.get("interpolation", "bilinear"),
        }
        if not train:
            return data_lib.make_video_transform(train=False, num_crops=int(d.get("num_crops", 1)), **kwargs)
        return data_lib.make_video_transform(
            train=True,
            scales=tuple(d.get("scales", ILA_SCALES)),
            color_jitter=float(d.get("color_jitter", 0.8)),
            color_jitter_per_frame=bool(d.get("color_jitter_per_frame", False)),
            grayscale=float(d.get("grayscale", 0.2)),
            reprob=float(d.get("reprob", 0.25)),
            remode=d.get("remode", "const"),
            **kwargs,
        )

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        source = self.data_source("train")
        pipeline = self.train_pipeline(
            self._transform(train=True), seed=seed, process_index=process_index, process_count=process_count,
            source=source,
            batch_transform=mixup_from_config(self.data_config, self.num_classes, image_key=VIDEO_KEY),
            worker_count=int(self.data_config.get("worker_count", 0)),
        )
        steps_per_epoch = len(source) // int(self.config.batch_size)
        return EpochIterator(iter(pipeline), steps_per_epoch)

    def eval_batches(self, *, process_index: int, process_count: int):
        return self.eval_batches_of(self._transform(train=False), (VIDEO_KEY, "label"), valid_key="mask",
                                    process_index=process_index, process_count=process_count)

    # ---- computation ---------------------------------------------------------------------------------------------
    def _targets(self, labels: jax.Array) -> jax.Array:
        if labels.ndim == 2:  # already soft (mixup / cutmix)
            return labels
        onehot = jax.nn.one_hot(labels, self.num_classes)
        smoothing = self.data_config.get("label_smoothing", 0.0)
        return optax.smooth_labels(onehot, smoothing) if smoothing else onehot

    def call_model(self, model, videos: jax.Array, batch, *, train: bool):
        """`model(videos, train=train, ...)`; the keywords it also takes get passed: `epoch` (the batch's, during
        training). A family task adds its own (ILA's class texts) by overriding this."""
        kwargs = {}
        if train and "epoch" in batch and accepts_keyword(model, "epoch"):
            kwargs["epoch"] = batch["epoch"][0]
        return model(videos, train=train, **kwargs)

    def loss(self, model, batch):
        logits, aux = split_output(self.call_model(model, batch[VIDEO_KEY], batch, train=True))
        logits = logits.astype(jnp.float32)
        ce = optax.softmax_cross_entropy(logits, self._targets(batch["label"])).mean()
        aux_total = sum(aux.values(), jnp.zeros((), jnp.float32))
        metrics = {"ce": ce, **{f"aux/{k}": v for k, v in aux.items()}}
        if batch["label"].ndim == 1:
            metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return ce + self.aux_loss_weight * aux_total, metrics

    def eval_sums(self, model, batch):
        videos, labels, mask = batch[VIDEO_KEY], batch["label"], batch["mask"]
        if videos.ndim == 6:  # (B, V, T, H, W, C): every view classified, the softmaxes summed
            num_views = videos.shape[1]
            videos = videos.reshape((-1, *videos.shape[2:]))
        elif videos.ndim == 5:
            num_views = 1
        else:
            raise ValueError(f"eval videos must be (B, T, H, W, C) or (B, views, T, H, W, C); got {videos.shape}")
        logits, _ = split_output(self.call_model(model, videos, batch, train=False))
        scores = summed_view_scores(logits, num_views)  # (B, K)
        top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))[1]
        mean_prob = jnp.take_along_axis(scores / num_views, labels[:, None], axis=-1)[:, 0]
        return {
            "top1": jnp.sum((top5[:, 0] == labels) * mask),
            "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
            "loss": jnp.sum(-jnp.log(jnp.maximum(mean_prob, 1e-12)) * mask),  # NLL of the view-averaged softmax
            "count": jnp.sum(mask),
        }
