"""Streaming video object tracking with SAM2 (one object), following the official `SAM2VideoPredictor`.

    tracker = SAM2VideoTracker(model)
    logits = tracker.add_points(0, frame0, points=[[210, 350]], labels=[1])     # (1, H, W) mask logits
    for index, frame in enumerate(frames[1:], start=1):
        logits = tracker.track(index, frame)                                    # (1, H, W)

Frames arrive one at a time (webcam / RTSP / a loader): nothing is preloaded, and the memory bank keeps only what
the model can attend to (the conditioning frames, the last `num_maskmem - 1` tracked frames' memories and the last
15 object pointers), so memory stays bounded on long videos. Inference follows `SAM2VideoPredictor` with the
official build overrides: 1-click prompts use the multimask output, tracked frames use multimask + best IoU,
prompted frames' masks are binarised for the memory encoder, memories are stored in bfloat16.
For several objects, use one tracker per object (the official predictor also tracks them independently).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.sam2.layers import bilinear_matrix, resize_hw
from models.sam2.model import SAM2
from models.sam2.predictor import preprocess


@dataclasses.dataclass
class _FrameMemory:
    """What a processed frame leaves for later frames."""

    pred_masks: jax.Array  # [1, 1, 4h, 4w] low-res logits
    obj_ptr: jax.Array  # [1, 256]
    object_score_logits: jax.Array  # [1, 1]
    maskmem_features: jax.Array | None = None  # [1, h, w, 64], rounded to bfloat16 like the official storage
    maskmem_pos_enc: jax.Array | None = None  # [1, h, w, 64]
    vision_feature: jax.Array | None = None  # [1, h, w, 256], kept until the memory is encoded
    point_inputs: tuple[np.ndarray, np.ndarray] | None = None


def _sine_1d(positions: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """`get_1d_sine_pe`: [N] -> [N, dim] (sin half, then cos half)."""
    half = dim // 2
    dim_t = jnp.arange(half, dtype=jnp.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    angles = positions[:, None] / dim_t
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class SAM2VideoTracker:
    """Tracks one object through a stream of frames (uint8 RGB, all the same size)."""

    def __init__(self, model: SAM2, *, num_frames: int | None = None, max_obj_ptrs: int = 16):
        """`num_frames` (if the video length is known) caps the object-pointer window like the official predictor."""
        if not isinstance(model, SAM2):
            raise TypeError(f"SAM2VideoTracker needs a models.sam2.SAM2 model; got {type(model).__name__}")
        self.model = model
        self.config = model.config
        self.num_frames = num_frames
        self.max_obj_ptrs = min(num_frames, max_obj_ptrs) if num_frames else max_obj_ptrs
        self._graphdef, self._state = nnx.split(model)
        self._features = jax.jit(self._features_fn)
        self._heads = jax.jit(self._heads_fn, static_argnames=("multimask_output", "num_obj_ptr_tokens",
                                                               "with_memory"))
        self._memory = jax.jit(self._memory_fn, static_argnames=("binarize",))
        self._to_video = jax.jit(lambda m, hw: resize_hw(m, hw, bilinear_matrix, axes=(2, 3)), static_argnums=1)
        self.reset()

    def reset(self) -> None:
        """Forget every frame and prompt."""
        self.cond_frames: dict[int, _FrameMemory] = {}
        self.non_cond_frames: dict[int, _FrameMemory] = {}
        self.video_hw: tuple[int, int] | None = None

    # -- jitted pieces ------------------------------------------------------------------------------------------------

    def _features_fn(self, state, images):
        out = nnx.merge(self._graphdef, state).forward_image(images)
        return out["backbone_fpn"], out["vision_pos_enc"][-1]

    def _heads_fn(self, state, fpn, pos, memory, memory_pos, coords, labels, mask_inputs, *, multimask_output,
                  num_obj_ptr_tokens, with_memory):
        model = nnx.merge(self._graphdef, state)
        feature = fpn[2]
        batch, height, width, channels = feature.shape
        if with_memory:
            curr = feature.reshape(batch, height * width, channels)
            curr_pos = pos.reshape(batch, height * width, channels)
            conditioned = model.memory_attention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
            pix_feat = conditioned.reshape(batch, height, width, channels)
        else:  # an initial conditioning frame: `directly_add_no_mem_embed`
            pix_feat = feature + model.no_mem_embed[...].astype(feature.dtype)
        return model.forward_sam_heads(pix_feat, coords, labels, mask_inputs, (fpn[0], fpn[1]), multimask_output)

    def _memory_fn(self, state, feature, high_res_masks, object_score_logits, *, binarize):
        model = nnx.merge(self._graphdef, state)
        masks = (high_res_masks > 0).astype(jnp.float32) if binarize else jax.nn.sigmoid(high_res_masks)
        masks = masks * 20.0 - 10.0  # sigmoid_scale_for_mem_enc, sigmoid_bias_for_mem_enc
        features, pos = model.memory_encoder(feature, jnp.transpose(masks, (0, 2, 3, 1)), skip_mask_sigmoid=True)
        if model.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).astype(features.dtype)[:, :, None, None]
            features = features + absent * model.no_obj_embed_spatial[...].astype(features.dtype)
        # The official predictor stores memories in bfloat16.
        return features.astype(jnp.bfloat16).astype(jnp.float32), pos

    # -- public API ---------------------------------------------------------------------------------------------------

    def add_points(self, frame_idx: int, image: np.ndarray, points: Any = None, labels: Any = None,
                   box: Any = None) -> np.ndarray:
        """Prompt the object on frame `frame_idx` (a conditioning frame); returns (1, H, W) mask logits.

        points (N, 2) (x, y) pixels with labels (N,) 1/0; box (4,) x0, y0, x1, y1 (placed before the points).
        Prompting a frame again replaces its points and refines from its previous mask, as the official predictor.
        """
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("add_points needs points/labels or a box")
        fpn, _ = self._frame_features(image)
        height, width = self.video_hw
        coords = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        point_labels = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        if coords.shape[0] != point_labels.shape[0]:
            raise ValueError(f"{coords.shape[0]} points but {point_labels.shape[0]} labels")
        if box is not None:
            coords = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), coords])
            point_labels = np.concatenate([np.asarray([2, 3], np.int32), point_labels])
        inside = (coords >= 0).all(-1) & (coords[:, 0] <= width) & (coords[:, 1] <= height)
        if not inside.all():
            raise ValueError(f"prompt (x, y) = {coords[~inside][0].tolist()} lies outside the {width}x{height} frame")
        scaled = coords / np.asarray([width, height], np.float32) * self.config.image_size
        previous = self.cond_frames.get(frame_idx) or self.non_cond_frames.get(frame_idx)
        mask_inputs = None if previous is None else jnp.clip(previous.pred_masks, -32.0, 32.0)
        # Multimask only for 0 or 1 click (multimask_min/max_pt_num), as in `SAM2Base._use_multimask`.
        out = self._heads(self._state, fpn, None, None, None, jnp.asarray(scaled[None]),
                          jnp.asarray(point_labels[None]), mask_inputs,
                          multimask_output=len(point_labels) <= 1, num_obj_ptr_tokens=0, with_memory=False)
        self.non_cond_frames.pop(frame_idx, None)
        self.cond_frames[frame_idx] = _FrameMemory(
            pred_masks=out["low_res_masks"], obj_ptr=out["obj_ptr"],
            object_score_logits=out["object_score_logits"], vision_feature=fpn[2],
            point_inputs=(scaled, point_labels),
        )
        return np.asarray(self._to_video(out["low_res_masks"], self.video_hw))[0]

    def track(self, frame_idx: int, image: np.ndarray) -> np.ndarray:
        """Segment the object in a new frame from the memories; returns (1, H, W) mask logits."""
        if not self.cond_frames:
            raise RuntimeError("prompt the object with add_points(...) before tracking")
        if frame_idx in self.cond_frames:
            return np.asarray(self._to_video(self.cond_frames[frame_idx].pred_masks, self.video_hw))[0]
        self._encode_pending_memories()
        fpn, pos = self._frame_features(image)
        memory, memory_pos, num_ptr_tokens = self._gather_memory(frame_idx)
        out = self._heads(self._state, fpn, pos, memory, memory_pos, None, None, None, multimask_output=True,
                          num_obj_ptr_tokens=num_ptr_tokens, with_memory=True)
        features, feature_pos = self._memory(self._state, fpn[2], out["high_res_masks"], out["object_score_logits"],
                                             binarize=False)
        self.non_cond_frames[frame_idx] = _FrameMemory(
            pred_masks=out["low_res_masks"], obj_ptr=out["obj_ptr"],
            object_score_logits=out["object_score_logits"], maskmem_features=features, maskmem_pos_enc=feature_pos,
        )
        self._prune(frame_idx)
        return np.asarray(self._to_video(out["low_res_masks"], self.video_hw))[0]

    # -- helpers ------------------------------------------------------------------------------------------------------

    def _frame_features(self, image: np.ndarray):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 RGB arrays (H, W, 3); got {getattr(image, 'shape', type(image).__name__)} "
                f"{getattr(image, 'dtype', '')}"
            )
        if self.video_hw is None:
            self.video_hw = (int(image.shape[0]), int(image.shape[1]))
        elif image.shape[:2] != self.video_hw:
            raise ValueError(f"frame of size {image.shape[:2]} in a video of size {self.video_hw}")
        return self._features(self._state, jnp.asarray(preprocess(image, self.config.image_size)[None]))

    def _encode_pending_memories(self) -> None:
        """Memories of prompted frames (the official `propagate_in_video_preflight`): binarised masks."""
        size = self.config.image_size
        for entry in self.cond_frames.values():
            if entry.maskmem_features is None:
                high_res = resize_hw(entry.pred_masks, (size, size), bilinear_matrix, axes=(2, 3))
                entry.maskmem_features, entry.maskmem_pos_enc = self._memory(
                    self._state, entry.vision_feature, high_res, entry.object_score_logits, binarize=True
                )
                entry.vision_feature = None

    def _gather_memory(self, frame_idx: int):
        """Memory tokens and positions for `frame_idx` (`SAM2Base._prepare_memory_conditioned_features`)."""
        model, config = self.model, self.config
        num_maskmem = config.num_maskmem
        tpos = model.maskmem_tpos_enc[...]
        entries = [(0, entry) for entry in self.cond_frames.values()]
        for t_pos in range(1, num_maskmem):
            previous = self.non_cond_frames.get(frame_idx - (num_maskmem - t_pos))
            if previous is not None:
                entries.append((t_pos, previous))
        memory, memory_pos = [], []
        for t_pos, entry in entries:
            batch, _height, _width, channels = entry.maskmem_features.shape
            memory.append(entry.maskmem_features.reshape(batch, -1, channels))
            pos = entry.maskmem_pos_enc.reshape(batch, -1, channels) + tpos[num_maskmem - t_pos - 1].reshape(1, 1, -1)
            memory_pos.append(pos)
        # Object pointers: conditioning frames in the past, then up to max_obj_ptrs - 1 recent tracked frames.
        signed = config.version == "2.1"
        pointers = [((frame_idx - t) if signed else abs(frame_idx - t), e.obj_ptr)
                    for t, e in self.cond_frames.items() if t <= frame_idx]
        for t_diff in range(1, self.max_obj_ptrs):
            t = frame_idx - t_diff
            if t < 0:
                break
            previous = self.non_cond_frames.get(t)
            if previous is not None:
                pointers.append((t_diff, previous.obj_ptr))
        num_ptr_tokens = 0
        if pointers:
            hidden, mem = config.hidden_dim, config.mem_dim
            ptrs = jnp.stack([p for _, p in pointers], axis=1)  # [B, N, 256]
            batch, count = ptrs.shape[:2]
            if model.obj_ptr_tpos_proj is not None:  # SAM 2.1: projected sine encoding of the time offset
                offsets = jnp.asarray([d for d, _ in pointers], jnp.float32) / (self.max_obj_ptrs - 1)
                ptr_pos = model.obj_ptr_tpos_proj(_sine_1d(offsets, hidden))
                ptr_pos = jnp.broadcast_to(ptr_pos[None], (batch, count, mem))
            else:
                ptr_pos = jnp.zeros((batch, count, mem), jnp.float32)
            split = hidden // mem  # each 256-d pointer becomes 4 tokens of 64
            memory.append(ptrs.reshape(batch, count * split, mem))
            memory_pos.append(jnp.repeat(ptr_pos, split, axis=1))
            num_ptr_tokens = count * split
        return jnp.concatenate(memory, axis=1), jnp.concatenate(memory_pos, axis=1), num_ptr_tokens

    def _prune(self, frame_idx: int) -> None:
        """Drop tracked frames that no later frame can attend to (bounded memory on long streams)."""
        horizon = max(self.config.num_maskmem - 1, self.max_obj_ptrs - 1)
        for t in [t for t in self.non_cond_frames if t < frame_idx - horizon]:
            del self.non_cond_frames[t]
