"""SAM2's two training tasks, registered by name: "segmentation" (images) and "video_segmentation" (clips, memory).

**segmentation** (`PromptableSegmentationTask`): promptable segmentation (SAM2 fine-tuning), a click or a box per
object, SAM2's training losses.

Config: model.{name, overrides (image_size ...), pretrained, freeze_image_encoder}; data.{train, eval (each
{name, split, kwargs}), image_size, box_prob, hflip, eval_batch_size}. Frozen image encoder:
`model.freeze_image_encoder=True` stops gradients at its output (no backward pass through Hiera) and
`optimizer.frozen = (r"image_encoder\\..*",)` keeps the optimizer off it (no update, no decay, no AdamW state).

The loss is SAM2's `MultiStepMultiMasksAndIous` with the SAM 2.1 training weights (sam2.1_hiera_b+_MOSE_finetune.yaml):
20 x sigmoid focal (alpha .25, gamma 2, mean over pixels) + 1 x dice + 1 x IoU-prediction L1 (`iou_use_l1_loss`,
`supervise_all_iou`) + 1 x object-score BCE (focal with gamma 0, no alpha), on masks upsampled to image_size; a
click gives three masks (multimask output) and the mask with the lowest 20 x focal + dice takes the mask losses, a box
gives the single-mask output. Losses are divided by the number of objects (one per example).

**video_segmentation** (`VideoSegmentationTask`): multi-frame SAM2 training with memory (the official `SAM2Train`
loop, without correction clicks). Each example is a clip of T frames following one object. Frame 0 is the
conditioning frame, prompted as in the SAM 2.1 training recipe: with probability `pt_prob` (0.5) by points, of which
`box_prob` (0.5) a box and otherwise a click, else by the ground-truth mask itself
(`use_mask_input_as_output_without_sam`: the mask is the output, the SAM heads only make the object pointer). Frames
1 .. T-1 are tracked: memory attention over the prompted frame's memory, the previous tracked frames' memories
(num_maskmem - 1 of them) and the object pointers, then the SAM heads with multimask output, then the memory
encoder on the predicted mask (sigmoid, x20 - 10, not binarised, as in training). Gradients flow through the whole
chain (memory encoder, memory attention, object pointers), except into the image encoder when it is frozen.

The heads are `SAM2.forward_sam_heads` in its training form (per-example multimask choice, all four masks for the
loss, no dynamic-stability fallback) and the memory is `models.sam2.video.MemoryBank`, the same fixed-slot layout
and slot writes the streaming predictor uses, kept in float32 here (the predictor stores bfloat16 as the official
one does at inference). The loss on every frame is `sam2_losses` (best of the three masks when multimask), summed
over frames and divided by the number of objects, as `MultiStepMultiMasksAndIous`; a frame prompted by its mask is
left out (its output is the constant input mask). Not ported: the iterative correction clicks on 1-2 frames
(`num_frames_to_correct_for_train`), a random second conditioning frame, several objects per clip, dropout in memory
attention and drop-path in Hiera.

Config: as `segmentation`, with data.{clip_length, pt_prob, box_prob, hflip}.

This is the family's task module (it may import `zoo.data` and `zoo.tasks`; the modelling files may not).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from models.sam2.video import META_KEYS, MemoryBank
from zoo import data as data_lib
from zoo.tasks import register_task
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


def mask_iou(logits, targets):
    """IoU of the binarised (logit > 0) masks with the targets, per mask: [B, M, H, W] x2 -> [B, M]."""
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
    iou_l1 = jnp.abs(ious - jax.lax.stop_gradient(mask_iou(masks, targets4)))
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


@register_task("segmentation")
class PromptableSegmentationTask(Task):
    """Fine-tune a registered SAM2 (`config.model.name`) on (image, object mask) examples with sampled prompts."""

    config_keys: ClassVar[dict[str, Any]] = {
        "model": {"freeze_image_encoder": None},
        "data": dict.fromkeys(("image_size", "box_prob", "hflip")),
    }

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.data_config = config.data
        self.image_size = int(config.data.image_size)
        self.freeze_encoder = bool(config.model.get("freeze_image_encoder", False))

    # ---- model ---------------------------------------------------------------------------------------------------
    def model_overrides(self) -> dict[str, Any]:
        overrides = super().model_overrides()
        overrides.setdefault("image_size", self.image_size)
        return overrides

    # ---- data ----------------------------------------------------------------------------------------------------
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
        miou = jnp.mean(mask_iou(best[:, None], batch["mask"][:, None])[:, 0])
        return total, {**terms, "miou": miou}

    def eval_sums(self, model, batch):
        total, _, best = self._forward(model, batch)
        valid = batch["valid"]
        iou = mask_iou(best[:, None], batch["mask"][:, None])[:, 0]
        return {"miou": jnp.sum(iou * valid), "loss": total * jnp.sum(valid), "count": jnp.sum(valid)}


# --------------------------------------------------------------------------------------------------------------------
# Multi-frame training with memory
# --------------------------------------------------------------------------------------------------------------------


def _pick(which, a, b):
    """Per example (leading axis): b where `which`, else a."""
    return jnp.where(which.reshape(-1, *[1] * (a.ndim - 1)), b, a)


class ClipTransform:
    """A clip {frames (T, H, W, 3) uint8, masks (T, H, W)} -> normalised frames, float masks and a frame-0 prompt."""

    def __init__(self, image_size: int, *, train: bool, pt_prob: float = 0.5, box_prob: float = 0.5,
                 hflip: float = 0.5):
        self.image_size, self.train = image_size, train
        self.pt_prob, self.box_prob, self.hflip = pt_prob, box_prob, hflip

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        size = self.image_size
        frames, masks = np.asarray(example["frames"]), np.asarray(example["masks"])
        if frames.ndim != 4 or masks.shape != frames.shape[:3]:
            raise ValueError(f"a clip needs frames (T, H, W, 3) and masks (T, H, W); got {frames.shape}, {masks.shape}")
        images = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
        targets = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST))
                            for m in masks]) > 127
        images = images.astype(np.float32) / 255.0
        if self.train and rng.random() < self.hflip:
            images, targets = images[:, :, ::-1], targets[:, :, ::-1]
        use_points = rng.random() < self.pt_prob
        coords, labels = sample_prompt(targets[0], rng, self.box_prob if use_points else 0.0)
        images = (images - np.asarray(data_lib.IMAGENET_MEAN, np.float32)) / np.asarray(data_lib.IMAGENET_STD,
                                                                                        np.float32)
        return {"image": np.ascontiguousarray(images, np.float32), "mask": np.ascontiguousarray(targets, np.float32),
                "point_coords": coords, "point_labels": labels, "mask_prompt": np.float32(not use_points)}


@register_task("video_segmentation")
class VideoSegmentationTask(PromptableSegmentationTask):
    """Fine-tune a registered SAM2 on clips (`config.data.clip_length` frames) with its memory in the loop."""

    config_keys: ClassVar[dict[str, Any]] = {"data": dict.fromkeys(("clip_length", "pt_prob"))}

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.clip_length = int(config.data.get("clip_length", 4))

    def _transform(self, train: bool) -> ClipTransform:
        d = self.data_config
        return ClipTransform(self.image_size, train=train, pt_prob=float(d.get("pt_prob", 0.5)),
                             box_prob=float(d.get("box_prob", 0.5)), hflip=float(d.get("hflip", 0.5)))

    eval_keys = ("image", "mask", "point_coords", "point_labels", "mask_prompt")

    # ---- computation ---------------------------------------------------------------------------------------------
    def _forward_clip(self, model, batch):
        """Frame-by-frame losses of a clip batch; returns (total, summed terms, per-frame best masks [B, T, S, S])."""
        images, targets = batch["image"], batch["mask"]
        count, length = images.shape[0], images.shape[1]
        out = model.forward_image(images.reshape(count * length, *images.shape[2:]))
        fpn = [f.reshape(count, length, *f.shape[1:]) for f in out["backbone_fpn"]]
        pos = out["vision_pos_enc"][-1][:1]
        if self.freeze_encoder:
            fpn = [jax.lax.stop_gradient(f) for f in fpn]
        memory = MemoryBank(model.config, max_obj_ptrs=min(length, 16), num_cond_slots=1,
                            num_ptr_slots=max(length - 1, 1), dtype=jnp.float32)
        bank = memory.empty_bank(count)
        meta = {k: jnp.asarray(v) for k, v in memory.empty_meta(count).items() if k in META_KEYS}

        totals, terms_sum, best_masks = 0.0, {}, []
        for t in range(length):
            feats = [f[:, t] for f in fpn]
            high_res = (feats[0], feats[1])
            if t == 0:  # the conditioning frame: prompt, no memory (`directly_add_no_mem_embed`)
                pix_feat = feats[2] + model.no_mem_embed[...].astype(feats[2].dtype)
                coords, labels = batch["point_coords"], batch["point_labels"]  # input pixels
                multimask = jnp.sum(labels >= 0, axis=-1) <= 1
                heads = model.forward_sam_heads(pix_feat, coords, labels, None, high_res,
                                                multimask_per_example=multimask)
                from_mask = memory.mask_as_output(model, feats, targets[:, 0][:, None])
                use_mask = batch["mask_prompt"] > 0
                low = _pick(use_mask, heads["low_res_masks"], from_mask["low_res_masks"])
                obj_ptr = _pick(use_mask, heads["obj_ptr"], from_mask["obj_ptr"])
                score = _pick(use_mask, heads["object_score_logits"], from_mask["object_score_logits"])
                high = _pick(use_mask, heads["high_res_masks"], from_mask["high_res_masks"])
                weight = 1.0 - batch["mask_prompt"]
            else:  # a tracked frame: memory-conditioned, multimask
                pix_feat = memory.condition(model, feats[2], pos, bank, meta, t, 1)
                multimask = jnp.ones((count,), bool)
                heads = model.forward_sam_heads(pix_feat, None, None, None, high_res, multimask_per_example=multimask)
                obj_ptr, score, high = heads["obj_ptr"], heads["object_score_logits"], heads["high_res_masks"]
                weight = jnp.ones((count,), jnp.float32)
            total, terms, best = sam2_losses(heads["high_res_multimasks"], heads["ious"], score, targets[:, t],
                                             multimask, weights=weight)
            totals = totals + total
            terms_sum = {k: terms_sum.get(k, 0.0) + v for k, v in terms.items()}
            best_masks.append(jnp.where(weight[:, None, None] > 0, best, high[:, 0]))
            features = memory.encode_memory(model, feats[2], high, score, False)
            if t == 0:
                bank = memory.write_prompt(bank, 0, features, obj_ptr, low[:, 0])
                meta = memory.mark_prompt(meta, t, 0)
            else:
                bank = memory.write_tracked(bank, t, features, obj_ptr)
                meta = memory.mark_tracked(meta, t)
        return totals, terms_sum, jnp.stack(best_masks, axis=1)

    def _clip_iou(self, best, targets):
        """Mean IoU over the tracked frames (1 .. T-1; frame 0 for one-frame clips) per example: [B]."""
        first = 1 if best.shape[1] > 1 else 0
        tracked = best[:, first:], targets[:, first:]
        ious = mask_iou(*(x.reshape(-1, 1, *x.shape[2:]) for x in tracked))[:, 0]
        return ious.reshape(best.shape[0], -1).mean(-1)

    def loss(self, model, batch):
        total, terms, best = self._forward_clip(model, batch)
        return total, {**terms, "miou_tracked": jnp.mean(self._clip_iou(best, batch["mask"]))}

    def eval_sums(self, model, batch):
        total, _, best = self._forward_clip(model, batch)
        valid = batch["valid"]
        iou = self._clip_iou(best, batch["mask"])
        return {"miou_tracked": jnp.sum(iou * valid), "loss": total * jnp.sum(valid), "count": jnp.sum(valid)}
