"""Promptable segmentation (SAM2 fine-tuning): a click or a box per object, SAM2's training losses.

Config: model.{name, overrides (image_size ...), pretrained, freeze_image_encoder}; data.{train, eval (each
{name, split, kwargs}), image_size, box_prob, hflip, eval_batch_size}. Frozen image encoder:
`model.freeze_image_encoder=True` stops gradients at its output (no backward pass through Hiera) and
`optimizer.frozen = (r"image_encoder\\..*",)` keeps the optimizer off it (no update, no decay, no AdamW state).

The loss is SAM2's `MultiStepMultiMasksAndIous` with the SAM 2.1 training weights (sam2.1_hiera_b+_MOSE_finetune.yaml):
20 x sigmoid focal (alpha .25, gamma 2, mean over pixels) + 1 x dice + 1 x IoU-prediction L1 (`iou_use_l1_loss`,
`supervise_all_iou`) + 1 x object-score BCE (focal with gamma 0, no alpha), on masks upsampled to image_size; a
click gives three masks (multimask output) and the mask with the lowest 20 x focal + dice takes the mask losses, a box
gives the single-mask output. Losses are divided by the number of objects (one per example).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

import zoo
from zoo import data as data_lib
from zoo.tasks.base import Task

WEIGHTS = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}


def sample_prompt(mask: np.ndarray, rng: np.random.Generator, box_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """(coords (2, 2) float32 (x, y), labels (2,) int32): a box (labels 2, 3) or a click inside the mask + padding."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:  # no object: a padding-only prompt (the object-score head should say "absent")
        return np.zeros((2, 2), np.float32), np.asarray([-1, -1], np.int32)
    if rng.random() < box_prob:
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        return np.asarray(box, np.float32).reshape(2, 2), np.asarray([2, 3], np.int32)
    pick = int(rng.integers(len(xs)))
    click = [[xs[pick] + 0.5, ys[pick] + 0.5], [0.0, 0.0]]
    return np.asarray(click, np.float32), np.asarray([1, -1], np.int32)


class PromptTransform:
    """uint8 image + mask -> SAM2 inputs at image_size: normalised image, float mask, one sampled prompt."""

    def __init__(self, image_size: int, *, train: bool, box_prob: float = 0.5, hflip: float = 0.5):
        self.image_size, self.train, self.box_prob, self.hflip = image_size, train, box_prob, hflip

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        size = self.image_size
        image = Image.fromarray(np.asarray(example["image"])).resize((size, size), Image.BILINEAR)
        mask = Image.fromarray(np.asarray(example["mask"], np.uint8) * 255).resize((size, size), Image.NEAREST)
        image, mask = np.asarray(image, np.float32) / 255.0, np.asarray(mask) > 127
        if self.train and rng.random() < self.hflip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        coords, labels = sample_prompt(mask, rng, self.box_prob)
        image = (image - np.asarray(data_lib.IMAGENET_MEAN, np.float32)) / np.asarray(data_lib.IMAGENET_STD,
                                                                                      np.float32)
        return {"image": np.ascontiguousarray(image, np.float32), "mask": np.ascontiguousarray(mask, np.float32),
                "point_coords": coords, "point_labels": labels}


def _focal(logits, targets, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss per mask, mean over pixels: [B, M, H, W] -> [B, M]."""
    prob = jax.nn.sigmoid(logits)
    ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.reshape(*loss.shape[:2], -1).mean(-1)


def _dice(logits, targets):
    prob = jax.nn.sigmoid(logits).reshape(*logits.shape[:2], -1)
    targets = targets.reshape(*targets.shape[:2], -1)
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def _actual_iou(logits, targets):
    pred, gt = (logits > 0).reshape(*logits.shape[:2], -1), (targets > 0).reshape(*targets.shape[:2], -1)
    return (pred & gt).sum(-1) / jnp.maximum((pred | gt).sum(-1), 1).astype(jnp.float32)


def sam2_losses(masks, ious, object_score_logits, targets, multimask, weights=None):
    """SAM2 `MultiStepMultiMasksAndIous` (one step). masks [B, 4, H, W] logits (token 0 = single-mask output,
    1-3 = multimask), ious [B, 4], object_score_logits [B, 1], targets [B, H, W], multimask [B] bool, weights [B]
    (optional, 0 leaves an example out). Returns the weighted total, the four terms and the supervised masks."""
    batch = masks.shape[0]
    weights = jnp.ones((batch,), jnp.float32) if weights is None else weights
    targets4 = jnp.broadcast_to(targets[:, None], masks.shape)
    focal, dice = _focal(masks, targets4), _dice(masks, targets4)
    iou_l1 = jnp.abs(ious - jax.lax.stop_gradient(_actual_iou(masks, targets4)))
    combo = focal * WEIGHTS["loss_mask"] + dice * WEIGHTS["loss_dice"]
    # A click supervises the best of the three multimask outputs; a box the single-mask output (token 0).
    best = jnp.where(multimask, jnp.argmin(combo[:, 1:], axis=-1) + 1, 0)
    take = lambda x: jnp.take_along_axis(x, best.reshape(-1, *[1] * (x.ndim - 1)), axis=1)[:, 0]
    iou_term = jnp.where(multimask, iou_l1[:, 1:].mean(-1), iou_l1[:, 0])  # supervise_all_iou
    target_obj = jnp.any(targets.reshape(batch, -1) > 0, axis=-1).astype(jnp.float32)
    logits = object_score_logits[:, 0]
    bce = jnp.maximum(logits, 0) - logits * target_obj + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    terms = {
        "loss_mask": jnp.sum(take(focal) * target_obj * weights) / batch,
        "loss_dice": jnp.sum(take(dice) * target_obj * weights) / batch,
        "loss_iou": jnp.sum(iou_term * target_obj * weights) / batch,
        "loss_class": jnp.sum(bce * weights) / batch,
    }
    total = sum(WEIGHTS[k] * v for k, v in terms.items())
    return total, terms, take(masks)


class PromptableSegmentationTask(Task):
    """Fine-tune a registered SAM2 (`config.model.name`) on (image, object mask) examples with sampled prompts."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.data_config = config.data
        self.image_size = int(config.data.image_size)
        self.freeze_encoder = bool(config.model.get("freeze_image_encoder", False))

    # ---- model ---------------------------------------------------------------------------------------------------
    def model_name(self) -> str:
        return self.config.model.name

    def model_overrides(self) -> dict[str, Any]:
        overrides = dict(self.config.model.get("overrides", {}) or {})
        overrides.setdefault("image_size", self.image_size)
        if self.config.get("dtype", "float32") != "float32":
            overrides.setdefault("dtype", self.config.dtype)
        return overrides

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return zoo.create_model(self.model_name(), rngs=rngs, **self.model_overrides())

    def build_pretrained(self, pretrained: str, rngs: nnx.Rngs) -> nnx.Module:
        """The model from an official .pt or an orbax directory (fine-tuning)."""
        return zoo.create_model(self.model_name(), pretrained=pretrained, rngs=rngs, **self.model_overrides())

    # ---- data ----------------------------------------------------------------------------------------------------
    def data_source(self, which: str):
        import zoo.data.video  # noqa: F401  (registers the vtest person-mask source)

        return super().data_source(which)

    def _transform(self, train: bool) -> PromptTransform:
        d = self.data_config
        return PromptTransform(self.image_size, train=train, box_prob=float(d.get("box_prob", 0.5)),
                               hflip=float(d.get("hflip", 0.5)))

    def train_iterator(self, *, seed: int, process_index: int, process_count: int):
        pipeline = data_lib.make_pipeline(
            self.data_source("train"), batch_size=int(self.config.batch_size), train=True,
            transform=self._transform(train=True), seed=seed, process_index=process_index,
            process_count=process_count,
        )
        return iter(pipeline)

    eval_keys = ("image", "mask", "point_coords", "point_labels")

    def eval_batches(self, *, process_index: int, process_count: int):
        return self.eval_batches_of(self._transform(train=False), self.eval_keys, valid_key="valid",
                                    process_index=process_index, process_count=process_count)

    # ---- computation ---------------------------------------------------------------------------------------------
    def _forward(self, model, batch):
        features = model.image_embeddings(batch["image"])
        if self.freeze_encoder:
            features = jax.lax.stop_gradient(features)
        prompt_encoder = model.sam_prompt_encoder
        sparse, dense = prompt_encoder((batch["point_coords"], batch["point_labels"]), None, None)
        masks, ious, _, object_score_logits = model.sam_mask_decoder.predict_masks(
            features["image_embed"], prompt_encoder.dense_pe(), sparse, dense, tuple(features["high_res_feats"])
        )
        size = self.image_size
        masks = jax.image.resize(masks.astype(jnp.float32), (*masks.shape[:2], size, size), "bilinear")
        multimask = jnp.sum(batch["point_labels"] >= 0, axis=-1) <= 1  # `_use_multimask`: 0 or 1 click
        return sam2_losses(masks, ious.astype(jnp.float32), object_score_logits.astype(jnp.float32),
                           batch["mask"], multimask)

    def loss(self, model, batch):
        total, terms, best = self._forward(model, batch)
        miou = jnp.mean(_actual_iou(best[:, None], batch["mask"][:, None])[:, 0])
        return total, {**terms, "miou": miou}

    def eval_sums(self, model, batch):
        total, _, best = self._forward(model, batch)
        valid = batch["valid"]
        iou = _actual_iou(best[:, None], batch["mask"][:, None])[:, 0]
        return {"miou": jnp.sum(iou * valid), "loss": total * jnp.sum(valid), "count": jnp.sum(valid)}
