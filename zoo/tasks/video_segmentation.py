"""Multi-frame SAM2 training with memory (the official `SAM2Train` loop, without correction clicks).

Each example is a clip of T frames following one object. Frame 0 is the conditioning frame, prompted as in the SAM
2.1 training recipe (sam2.1_hiera_b+_MOSE_finetune.yaml): with probability `pt_prob` (0.5) by points, of which
`box_prob` (0.5) a box and otherwise a click, else by the ground-truth mask itself
(`use_mask_input_as_output_without_sam`: the mask is the output, the SAM heads only make the object pointer). Frames
1 .. T-1 are tracked: memory attention over the prompted frame's memory, the previous tracked frames' memories
(num_maskmem - 1 of them) and the object pointers, then the SAM heads with multimask output, then the memory
encoder on the predicted mask (sigmoid, x20 - 10, not binarised, as in training). Gradients flow through the whole
chain (memory encoder, memory attention, object pointers), except into the image encoder when it is frozen.

The memory is `models.sam2.video.MemoryBank`, the same fixed-slot layout the streaming predictor uses, kept in
float32 here (the predictor stores bfloat16 as the official one does at inference). The loss on every frame is
SAM2's (`zoo.tasks.segmentation.sam2_losses`: 20 x focal + dice + IoU L1 + object-score BCE, best of the three masks
when multimask), summed over frames and divided by the number of objects, as `MultiStepMultiMasksAndIous`; a frame
prompted by its mask is left out (its output is the constant input mask). Not ported: the iterative correction
clicks on 1-2 frames (`num_frames_to_correct_for_train`), a random second conditioning frame, several objects per
clip, dropout in memory attention and drop-path in Hiera.

Config: as the `segmentation` task, with data.{clip_length, pt_prob, box_prob, hflip}.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from zoo import data as data_lib
from zoo.tasks.segmentation import PromptableSegmentationTask, _actual_iou, sam2_losses, sample_prompt

NO_OBJ_SCORE = -1024.0


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


class VideoSegmentationTask(PromptableSegmentationTask):
    """Fine-tune a registered SAM2 on clips (`config.data.clip_length` frames) with its memory in the loop."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.clip_length = int(config.data.get("clip_length", 4))

    def _transform(self, train: bool) -> ClipTransform:
        d = self.data_config
        return ClipTransform(self.image_size, train=train, pt_prob=float(d.get("pt_prob", 0.5)),
                             box_prob=float(d.get("box_prob", 0.5)), hflip=float(d.get("hflip", 0.5)))

    eval_keys = ("image", "mask", "point_coords", "point_labels", "mask_prompt")

    # ---- computation ---------------------------------------------------------------------------------------------
    @staticmethod
    def _heads(model, pix_feat, coords, labels, high_res, multimask):
        """`_forward_sam_heads` in training (no dynamic-stability fallback), with a per-example multimask flag.
        Returns all four decoder masks (gated by the object score), their IoUs, the best low-res mask, the object
        pointer and the object-score logits."""
        encoder = model.sam_prompt_encoder
        sparse, dense = encoder((coords, labels), None, None)
        masks, ious, tokens, object_score = model.sam_mask_decoder.predict_masks(
            pix_feat, encoder.dense_pe(), sparse, dense, tuple(high_res))
        masks, ious, object_score = (x.astype(jnp.float32) for x in (masks, ious, object_score))
        appearing = object_score > 0
        masks = jnp.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
        best = jnp.where(multimask, jnp.argmax(ious[:, 1:], axis=-1) + 1, 0)
        low_best = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
        token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
        obj_ptr = model.obj_ptr_proj(token).astype(jnp.float32)
        weight = appearing.astype(jnp.float32)
        obj_ptr = weight * obj_ptr + (1 - weight) * model.no_obj_ptr[...].astype(jnp.float32)
        return masks, ious, low_best, obj_ptr, object_score

    def _forward_clip(self, model, batch):
        """Frame-by-frame losses of a clip batch; returns (total, summed terms, per-frame best masks [B, T, S, S])."""
        from models.sam2.layers import bilinear_matrix, resize_hw
        from models.sam2.video import _META, MemoryBank

        images, targets = batch["image"], batch["mask"]
        count, length, size = images.shape[0], images.shape[1], self.image_size
        out = model.forward_image(images.reshape(count * length, *images.shape[2:]))
        fpn = [f.reshape(count, length, *f.shape[1:]) for f in out["backbone_fpn"]]
        pos = out["vision_pos_enc"][-1][:1]
        if self.freeze_encoder:
            fpn = [jax.lax.stop_gradient(f) for f in fpn]
        memory = MemoryBank(model.config, max_obj_ptrs=min(length, 16), num_cond_slots=1,
                            num_ptr_slots=max(length - 1, 1), dtype=jnp.float32)
        bank = memory.empty_bank(count)
        meta = {k: jnp.asarray(v) for k, v in memory.empty_meta(count).items() if k in _META}

        def upsample(m):
            return resize_hw(m, (size, size), bilinear_matrix, axes=(2, 3))

        totals, terms_sum, best_masks = 0.0, {}, []
        for t in range(length):
            feats = [f[:, t] for f in fpn]
            high_res = (feats[0], feats[1])
            if t == 0:  # the conditioning frame: prompt, no memory (`directly_add_no_mem_embed`)
                pix_feat = feats[2] + model.no_mem_embed[...].astype(feats[2].dtype)
                coords, labels = batch["point_coords"], batch["point_labels"]  # input pixels
                multimask = jnp.sum(labels >= 0, axis=-1) <= 1
                masks, ious, low, obj_ptr, score = self._heads(model, pix_feat, coords, labels, high_res, multimask)
                from_mask = memory.mask_as_output(model, feats, targets[:, 0][:, None])
                use_mask = batch["mask_prompt"] > 0
                low = _pick(use_mask, low, from_mask["low_res_masks"])
                obj_ptr = _pick(use_mask, obj_ptr, from_mask["obj_ptr"])
                score = _pick(use_mask, score, from_mask["object_score_logits"])
                high = _pick(use_mask, upsample(low), from_mask["high_res_masks"])
                weight = 1.0 - batch["mask_prompt"]
            else:  # a tracked frame: memory-conditioned, multimask
                pix_feat = memory.condition(model, feats[2], pos, bank, meta, t, 1)
                coords = jnp.zeros((count, 1, 2), jnp.float32)
                labels = -jnp.ones((count, 1), jnp.int32)
                multimask = jnp.ones((count,), bool)
                masks, ious, low, obj_ptr, score = self._heads(model, pix_feat, coords, labels, high_res, multimask)
                high = upsample(low)
                weight = jnp.ones((count,), jnp.float32)
            total, terms, best = sam2_losses(upsample(masks), ious, score, targets[:, t], multimask,
                                             weights=weight)
            totals = totals + total
            terms_sum = {k: terms_sum.get(k, 0.0) + v for k, v in terms.items()}
            best_masks.append(jnp.where(weight[:, None, None] > 0, best, high[:, 0]))
            features = memory.encode_memory(model, feats[2], high, score, False)
            bank = dict(bank)
            if t == 0:
                bank["cond_mem"] = bank["cond_mem"].at[:, 0].set(features)
                bank["cond_ptr"] = bank["cond_ptr"].at[:, 0].set(obj_ptr)
                meta["cond_valid"] = meta["cond_valid"].at[:, 0].set(True)
            else:
                slot, ptr_slot = t % memory.num_mem_slots, t % memory.num_ptr_slots
                bank["mem"] = bank["mem"].at[:, slot].set(features)
                bank["ptr"] = bank["ptr"].at[:, ptr_slot].set(obj_ptr)
                meta["mem_frame"] = meta["mem_frame"].at[:, slot].set(t)
                meta["mem_valid"] = meta["mem_valid"].at[:, slot].set(True)
                meta["ptr_frame"] = meta["ptr_frame"].at[:, ptr_slot].set(t)
                meta["ptr_valid"] = meta["ptr_valid"].at[:, ptr_slot].set(True)
        return totals, terms_sum, jnp.stack(best_masks, axis=1)

    def _clip_iou(self, best, targets):
        """Mean IoU over the tracked frames (1 .. T-1; frame 0 for one-frame clips) per example: [B]."""
        first = 1 if best.shape[1] > 1 else 0
        tracked = best[:, first:], targets[:, first:]
        ious = _actual_iou(*(x.reshape(-1, 1, *x.shape[2:]) for x in tracked))[:, 0]
        return ious.reshape(best.shape[0], -1).mean(-1)

    def loss(self, model, batch):
        total, terms, best = self._forward_clip(model, batch)
        return total, {**terms, "miou_tracked": jnp.mean(self._clip_iou(best, batch["mask"]))}

    def eval_sums(self, model, batch):
        total, _, best = self._forward_clip(model, batch)
        valid = batch["valid"]
        iou = self._clip_iou(best, batch["mask"])
        return {"miou_tracked": jnp.sum(iou * valid), "loss": total * jnp.sum(valid), "count": jnp.sum(valid)}
