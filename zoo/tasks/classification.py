"""Image classification: softmax cross-entropy (soft targets for mixup/cutmix/label smoothing), top-1/top-5 eval."""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from zoo import data as data_lib
from zoo.tasks import register_task
from zoo.tasks.base import Task


def image_transform_from_config(data_config, *, train: bool, default_scale: tuple[float, float] = (0.08, 1.0)):
    """`zoo.data.make_image_transform` from a config's data section (image_size, scale, ratio, hflip, auto_augment,
    interpolation, reprob, crop_pct, mean, std; absent keys take timm's defaults, `default_scale` for scale)."""
    d = data_config
    return data_lib.make_image_transform(
        train=train,
        image_size=d.image_size,
        scale=tuple(d.get("scale", default_scale)),
        ratio=tuple(d.get("ratio", (3 / 4, 4 / 3))),
        hflip=d.get("hflip", 0.5),
        auto_augment=d.get("auto_augment", None) or None,
        interpolation=d.get("interpolation", "bicubic"),
        reprob=d.get("reprob", 0.0),
        crop_pct=d.get("crop_pct", 0.875),
        mean=tuple(d.get("mean", data_lib.IMAGENET_MEAN)),
        std=tuple(d.get("std", data_lib.IMAGENET_STD)),
    )


def mixup_from_config(data_config, num_classes: int, *, image_key: str = "image") -> data_lib.Mixup | None:
    """`zoo.data.Mixup` from a config's data section (mixup, cutmix, mixup_prob, switch_prob, label_smoothing), or
    None when both alphas are 0."""
    d = data_config
    if not (d.get("mixup", 0.0) > 0 or d.get("cutmix", 0.0) > 0):
        return None
    return data_lib.Mixup(
        num_classes,
        mixup_alpha=d.get("mixup", 0.0),
        cutmix_alpha=d.get("cutmix", 0.0),
        prob=d.get("mixup_prob", 1.0),
        switch_prob=d.get("switch_prob", 0.5),
        label_smoothing=d.get("label_smoothing", 0.0),
        image_key=image_key,
    )


@register_task("classification")
class ClassificationTask(Task):
    """A registered classifier (`config.model.name` + `config.model.overrides`) on a `zoo.data` source.

    Config: model.{name, overrides, pretrained}; data.{train, eval (each {name, split, kwargs}), num_classes,
    image_size, interpolation, crop_pct, mean, std, scale, ratio, hflip, auto_augment, reprob, mixup, cutmix,
    mixup_prob, switch_prob, label_smoothing, eval_batch_size}. The model is built by the base Task from
    `model_name()` / `model_overrides()`; layer ids for layer-wise LR decay come from the model's `layer_id(path)`.
    """

    config_keys: ClassVar[dict[str, Any]] = {
        "data": dict.fromkeys(
            ("num_classes", "image_size", "interpolation", "crop_pct", "mean", "std", "scale", "ratio", "hflip",
             "auto_augment", "reprob", "mixup", "cutmix", "mixup_prob", "switch_prob", "label_smoothing")
        )
    }

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.data_config = config.data
        self.num_classes = int(config.data.num_classes)

    # ---- data ----------------------------------------------------------------------------------------------------
    def _transform(self, train: bool):
        return image_transform_from_config(self.data_config, train=train)

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        pipeline = self.train_pipeline(self._transform(train=True), seed=seed, process_index=process_index,
                                       process_count=process_count,
                                       batch_transform=mixup_from_config(self.data_config, self.num_classes))
        return iter(pipeline)

    def eval_batches(self, *, process_index: int, process_count: int):
        return self.eval_batches_of(self._transform(train=False), ("image", "label"), valid_key="mask",
                                    process_index=process_index, process_count=process_count)

    # ---- computation ---------------------------------------------------------------------------------------------
    def _targets(self, labels: jax.Array) -> jax.Array:
        if labels.ndim == 2:  # already soft (mixup / cutmix)
            return labels
        smoothing = self.data_config.get("label_smoothing", 0.0)
        return optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes), smoothing) if smoothing else (
            jax.nn.one_hot(labels, self.num_classes)
        )

    def loss(self, model, batch):
        logits = model(batch["image"], train=True).astype(jnp.float32)
        loss = optax.softmax_cross_entropy(logits, self._targets(batch["label"])).mean()
        metrics = {}
        if batch["label"].ndim == 1:
            metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, metrics

    def eval_sums(self, model, batch):
        logits = model(batch["image"], train=False).astype(jnp.float32)
        labels, mask = batch["label"], batch["mask"]
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        return {
            "top1": jnp.sum((top5[:, 0] == labels) * mask),
            "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
            "loss": jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels) * mask),
            "count": jnp.sum(mask),
        }
