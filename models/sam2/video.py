"""Streaming video segmentation with SAM2: several objects, a fixed-size memory bank, prompts on any frame.

    predictor = SAM2VideoPredictor(model)
    predictor.add_points(0, frame0, obj_id=1, points=[[210, 350]], labels=[1])   # (H, W) mask logits of object 1
    predictor.add_points(0, frame0, obj_id=2, box=[300, 100, 420, 380])
    predictor.add_mask(0, frame0, obj_id=3, mask=binary_mask)                   # (H, W) bool mask prompt
    for index, frame in enumerate(frames[1:], start=1):
        logits = predictor.track(index, frame)          # (num_objects, H, W), rows in predictor.obj_ids order
        # a correction click on the frame just tracked refines it from the memories and makes it a prompted frame:
        # predictor.add_points(index, frame, obj_id=2, points=[[...]], labels=[0])
    # backwards from a prompt on the last frame: predictor.track(index, frame, reverse=True) for decreasing indices

Frames arrive one at a time (webcam / RTSP / a loader); nothing is preloaded. Inference follows the official
`SAM2VideoPredictor` (`build_sam2_video_predictor` overrides): 1-click prompts use the multimask output, tracked
frames use multimask + best IoU, prompted frames' memories come from binarised masks, memories are stored in
bfloat16, SAM 2.1 object pointers get signed, projected temporal encodings. Objects are tracked independently and
batched through one call per frame (the image is encoded once per frame for all objects).

The memory bank has a fixed size so the tracking step compiles a few times at most and device memory stays flat on
long streams: per object, `max_cond_frames` slots for prompted frames (the most recent ones are kept, as the official
`max_cond_frames_in_attn` keeps the closest), a ring of `num_maskmem - 1` slots for the last tracked frames' memories
(slot = frame % size) and a ring of `max_obj_ptrs - 1` object pointers. Each slot records its frame index; inside
the jitted step the slots outside the model's temporal window (or never written) are left out of memory attention,
which gives the same result as the official variable-length memory. Masked keys would still cost attention compute,
so the step gathers the attended frames first and attends over a compiled number of them (`frame_buckets`: 1, 2, 4,
1 + ring size, ..., every slot; the smallest that holds them, from the host-side slot metadata), masking only the
remainder of the bucket: the step compiles once per bucket while the rings fill, then never again, and the bank
itself never changes size. Adding an object grows the leading (object) axis of the bank: the step compiles once per
number of objects (and bucket).

Reverse tracking reads the same rings with time mirrored (the "previous" frames are the later ones). The rings hold
the last tracked frames in feeding order, so a reverse pass that follows a long forward pass from the same prompt
sees only the memories still in the ring, where the official predictor, which keeps every frame's output, would
also reuse forward-pass memories of frames just after the current one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.sam2.layers import bilinear_matrix, resize_hw
from models.sam2.model import SAM2
from models.sam2.neck import sine_position_encoding
from models.sam2.predictor import preprocess, to_device


def _sine_1d(positions: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """`get_1d_sine_pe`: [...] -> [..., dim] (sin half, then cos half)."""
    half = dim // 2
    dim_t = jnp.arange(half, dtype=jnp.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    angles = positions[..., None] / dim_t
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


# Slot metadata (frame index and validity per slot) that the memory read (`MemoryBank.gather`) uses; the predictor
# keeps it on the host and adds "last_frame" and "sign" for its own bookkeeping; the big arrays live in the bank.
META_KEYS = ("cond_frame", "cond_valid", "mem_frame", "mem_valid", "ptr_frame", "ptr_valid")


def _set_where(array: Any, hit: Any, value: Any) -> Any:
    """`array` with `value` where `hit`: numpy in, numpy out (host metadata); jax in, jax out (traced metadata)."""
    xp = np if isinstance(array, np.ndarray) and isinstance(hit, np.ndarray) else jnp
    return xp.where(hit, xp.asarray(value, array.dtype), array)


def _row_hit(count: int, rows: Any) -> Any:
    """[count, 1] bool: the objects `rows` names (None: all, an index, or a [count] bool mask)."""
    if rows is None:
        return np.ones((count, 1), bool)
    if getattr(rows, "ndim", 0) == 1:
        return rows[:, None]
    return (np.arange(count) == rows)[:, None]


class MemoryBank:
    """The fixed-slot SAM2 memory of one or more objects: layout, memory-attention inputs, memory encoding.

    Pure functions of (model, bank, meta), traced inside the streaming predictor's jitted steps and inside the
    multi-frame training loss (`models.sam2.tasks`). Per object: `num_cond_slots` prompted frames,
    `num_mem_slots` (num_maskmem - 1) tracked-frame memories and `num_ptr_slots` object pointers, each tagged with
    its frame index; invalid or out-of-window slots are hidden from memory attention by a key mask.
    """

    def __init__(self, config, *, max_obj_ptrs: int = 16, num_cond_slots: int = 1, num_mem_slots: int | None = None,
                 num_ptr_slots: int = 15, dtype: Any = jnp.bfloat16):
        """dtype: storage of the spatial memories (bfloat16 at inference as the official predictor; float32 in
        training, as `SAM2Train`)."""
        self.config = config
        self.dtype = dtype
        self.max_obj_ptrs = max_obj_ptrs
        self.num_cond_slots = num_cond_slots
        self.num_mem_slots = config.num_maskmem - 1 if num_mem_slots is None else num_mem_slots
        self.num_ptr_slots = num_ptr_slots
        side = config.embedding_size
        self._tokens = side * side
        self._mem_pos = sine_position_encoding(side, side, config.mem_dim).reshape(1, -1, config.mem_dim)

    def empty_bank(self, count: int) -> dict[str, jax.Array]:
        cfg, low = self.config, self.config.image_size // 4
        c, s, p, t = self.num_cond_slots, self.num_mem_slots, self.num_ptr_slots, self._tokens
        return {
            "cond_mem": jnp.zeros((count, c, t, cfg.mem_dim), self.dtype),
            "cond_ptr": jnp.zeros((count, c, cfg.hidden_dim), jnp.float32),
            "cond_masks": jnp.zeros((count, c, low, low), jnp.float32),
            "mem": jnp.zeros((count, s, t, cfg.mem_dim), self.dtype),
            "ptr": jnp.zeros((count, p, cfg.hidden_dim), jnp.float32),
            "last_masks": jnp.zeros((count, low, low), jnp.float32),
        }

    def empty_meta(self, count: int) -> dict[str, np.ndarray]:
        c, s, p = self.num_cond_slots, self.num_mem_slots, self.num_ptr_slots
        return {
            "cond_frame": np.zeros((count, c), np.int32), "cond_valid": np.zeros((count, c), bool),
            "mem_frame": np.zeros((count, s), np.int32), "mem_valid": np.zeros((count, s), bool),
            "ptr_frame": np.zeros((count, p), np.int32), "ptr_valid": np.zeros((count, p), bool),
            "last_frame": np.full((count,), -1, np.int64),
            "sign": np.ones((count,), np.int32),  # direction the object's last tracked frame was tracked in
        }

    def tracked_slots(self, frame_idx):
        """(memory slot, pointer slot) of tracked frame `frame_idx` in the rings (frame % ring size; may be traced)."""
        return frame_idx % self.num_mem_slots, frame_idx % self.num_ptr_slots

    def write_tracked(self, bank, frame_idx, features, obj_ptr, write=None):
        """The bank with tracked frame `frame_idx`'s memory features [B, tokens, 64] and object pointer [B, 256]
        stored in the rings, for the objects where `write` [B] bool (all when None; the others keep their slot).
        Traceable; the matching metadata update is `mark_tracked`."""
        slot, ptr_slot = self.tracked_slots(frame_idx)
        bank = dict(bank)
        if write is not None:
            features = jnp.where(write[:, None, None], features, bank["mem"][:, slot])
            obj_ptr = jnp.where(write[:, None], obj_ptr, bank["ptr"][:, ptr_slot])
        bank["mem"] = bank["mem"].at[:, slot].set(features)
        bank["ptr"] = bank["ptr"].at[:, ptr_slot].set(obj_ptr)
        return bank

    def mark_tracked(self, meta, frame_idx, write=None):
        """The slot metadata after `write_tracked`: the ring slots of `frame_idx` hold that frame, for the objects
        where `write` (all when None). Works on host numpy metadata (frame_idx an int) and traced jax metadata."""
        meta = dict(meta)
        count = meta["mem_frame"].shape[0]
        for prefix, slot in zip(("mem", "ptr"), self.tracked_slots(frame_idx), strict=True):
            frames = meta[f"{prefix}_frame"]
            hit = _row_hit(count, write) & (np.arange(frames.shape[1]) == slot)[None]
            meta[f"{prefix}_frame"] = _set_where(frames, hit, frame_idx)
            meta[f"{prefix}_valid"] = _set_where(meta[f"{prefix}_valid"], hit, True)
        return meta

    def write_prompt(self, bank, slot, features, obj_ptr, low_res_masks, rows=slice(None)):
        """The bank with a prompted frame in conditioning slot `slot` of objects `rows` (all by default, or one
        object index): its memory features, object pointer and low-res mask (also the objects' latest mask).
        Shapes follow `rows`: [B, ...] for all objects, no leading axis for one. The metadata is `mark_prompt`."""
        bank = dict(bank)
        bank["cond_mem"] = bank["cond_mem"].at[rows, slot].set(features)
        bank["cond_ptr"] = bank["cond_ptr"].at[rows, slot].set(obj_ptr)
        bank["cond_masks"] = bank["cond_masks"].at[rows, slot].set(low_res_masks)
        bank["last_masks"] = bank["last_masks"].at[rows].set(low_res_masks)
        return bank

    def mark_prompt(self, meta, frame_idx, slot, rows=None):
        """The slot metadata after `write_prompt`: conditioning slot `slot` of objects `rows` (all when None, or an
        index) holds frame `frame_idx`, which leaves their tracked rings (a frame is either prompted or tracked).
        Works on host numpy metadata and traced jax metadata."""
        meta = dict(meta)
        count = meta["cond_frame"].shape[0]
        row = _row_hit(count, rows)
        for prefix in ("mem", "ptr"):
            stale = row & (meta[f"{prefix}_frame"] == frame_idx)
            meta[f"{prefix}_valid"] = _set_where(meta[f"{prefix}_valid"], stale, False)
        hit = row & (np.arange(meta["cond_frame"].shape[1]) == slot)[None]
        meta["cond_frame"] = _set_where(meta["cond_frame"], hit, frame_idx)
        meta["cond_valid"] = _set_where(meta["cond_valid"], hit, True)
        return meta

    def frame_buckets(self) -> tuple[int, ...]:
        """The numbers of spatial memory frames memory attention is compiled for (`frames_in_attention`): powers of
        two, the steady state of one prompted frame plus a full ring, and every slot."""
        total = self.num_cond_slots + self.num_mem_slots
        sizes = {2**i for i in range(total.bit_length()) if 2**i < total} | {total}
        if 0 < self.num_cond_slots and self.num_mem_slots + 1 < total:
            sizes.add(self.num_mem_slots + 1)
        return tuple(sorted(sizes))

    def frames_in_attention(self, meta, frame_idx: int, sign: int) -> int:
        """The smallest bucket (`frame_buckets`) that holds every object's attended spatial memory frames, from host
        metadata: `gather(..., num_frames=...)` then attends over that many frames instead of every slot."""
        diff = (frame_idx - np.asarray(meta["mem_frame"])) * sign
        mem_ok = np.asarray(meta["mem_valid"]) & (diff >= 1) & (diff <= self.config.num_maskmem - 1)
        needed = int((np.asarray(meta["cond_valid"]).sum(axis=1) + mem_ok.sum(axis=1)).max(initial=0))
        return next(size for size in self.frame_buckets() if size >= max(needed, 1))

    def gather(self, model, bank, meta, frame_idx, sign, num_frames: int | None = None):
        """Memory tokens, positions and key mask for every object (`_prepare_memory_conditioned_features`).

        sign is +1 when tracking forward and -1 in reverse: "previous" frames are then the later ones. num_frames
        (static; None = every slot) compacts the spatial memories to that many frames, the attended ones first
        (`frames_in_attention` picks it): masked slots cost attention compute, so the bank's empty or out-of-window
        slots are dropped instead of masked. Key order does not change attention (RoPE uses the same table for
        every frame), only the summation order."""
        cfg = self.config
        num_maskmem, mem_dim, hidden = cfg.num_maskmem, cfg.mem_dim, cfg.hidden_dim
        tpos = model.maskmem_tpos_enc[...].reshape(num_maskmem, 1, mem_dim)
        count, c, tokens = bank["cond_mem"].shape[:3]
        s = bank["mem"].shape[1]
        # Spatial memories: prompted frames (t_pos 0) and tracked frames 1 .. num_maskmem - 1 frames back.
        cond_pos = jnp.asarray(self._mem_pos) + tpos[num_maskmem - 1]
        diff = (frame_idx - meta["mem_frame"]) * sign
        mem_ok = meta["mem_valid"] & (diff >= 1) & (diff <= num_maskmem - 1)
        mem_pos = jnp.asarray(self._mem_pos)[None] + tpos[jnp.clip(diff - 1, 0, num_maskmem - 1)]  # [B, S, tokens, 64]
        if num_frames is not None and num_frames < c + s:
            # Per object, the attended frames first (stable: prompted, then ring order), then the first num_frames.
            frames = jnp.concatenate([bank["cond_mem"], bank["mem"]], axis=1)  # [B, C + S, tokens, 64]
            frames_pos = jnp.concatenate([jnp.broadcast_to(cond_pos, (count, c, tokens, mem_dim)), mem_pos], axis=1)
            frames_ok = jnp.concatenate([meta["cond_valid"], mem_ok], axis=1)
            order = jnp.argsort(~frames_ok, axis=1, stable=True)[:, :num_frames]
            pick = order[:, :, None, None]
            memory = [jnp.take_along_axis(frames, pick, axis=1).reshape(count, num_frames * tokens, mem_dim)]
            memory_pos = [jnp.take_along_axis(frames_pos, pick, axis=1).reshape(count, num_frames * tokens, mem_dim)]
            masks = [jnp.repeat(jnp.take_along_axis(frames_ok, order, axis=1), tokens, axis=1)]
        else:
            memory = [bank["cond_mem"].reshape(count, c * tokens, mem_dim),
                      bank["mem"].reshape(count, s * tokens, mem_dim)]
            memory_pos = [jnp.tile(cond_pos, (count, c, 1)), mem_pos.reshape(count, s * tokens, mem_dim)]
            masks = [jnp.repeat(meta["cond_valid"], tokens, axis=1), jnp.repeat(mem_ok, tokens, axis=1)]
        # Object pointers: prompted frames up to now, then tracked frames up to max_obj_ptrs - 1 back.
        ptrs = jnp.concatenate([bank["cond_ptr"], bank["ptr"]], axis=1)  # [B, C + P, 256]
        cond_offset = (frame_idx - meta["cond_frame"]) * sign  # only pointers "in the past" of the direction
        ptr_diff = (frame_idx - meta["ptr_frame"]) * sign
        ptr_ok = jnp.concatenate([meta["cond_valid"] & (cond_offset >= 0),
                                  meta["ptr_valid"] & (ptr_diff >= 1) & (ptr_diff <= self.max_obj_ptrs - 1)], axis=1)
        offsets = jnp.concatenate([cond_offset, ptr_diff], axis=1).astype(jnp.float32)
        if model.obj_ptr_tpos_proj is not None:  # SAM 2.1: projected sine encoding of the (signed) time offset
            ptr_pos = model.obj_ptr_tpos_proj(_sine_1d(offsets / max(self.max_obj_ptrs - 1, 1), hidden))
        else:
            ptr_pos = jnp.zeros((*offsets.shape, mem_dim), jnp.float32)
        split = hidden // mem_dim  # each 256-d pointer becomes 4 tokens of 64
        num_ptr_tokens = ptrs.shape[1] * split
        memory.append(ptrs.reshape(count, num_ptr_tokens, mem_dim))
        memory_pos.append(jnp.repeat(ptr_pos, split, axis=1))
        masks.append(jnp.repeat(ptr_ok, split, axis=1))
        memory = jnp.concatenate([m.astype(jnp.float32) for m in memory], axis=1)
        return memory, jnp.concatenate(memory_pos, axis=1), jnp.concatenate(masks, axis=1), num_ptr_tokens

    def condition(self, model, feature, pos, bank, meta, frame_idx, sign, num_frames: int | None = None):
        """The current frame's features [B, h, w, C] after memory attention over the bank (`gather`; num_frames
        as there)."""
        batch, height, width, channels = feature.shape
        memory, memory_pos, memory_mask, num_ptr_tokens = self.gather(model, bank, meta, frame_idx, sign, num_frames)
        curr = feature.reshape(batch, height * width, channels)
        curr_pos = jnp.broadcast_to(pos, feature.shape).reshape(batch, height * width, channels)
        out = model.memory_attention(curr, memory, curr_pos, memory_pos, num_ptr_tokens, memory_mask=memory_mask)
        return out.reshape(batch, height, width, channels)

    def encode_memory(self, model, feature, high_res_masks, object_score_logits, binarize):
        masks = (high_res_masks > 0).astype(jnp.float32) if binarize else jax.nn.sigmoid(high_res_masks)
        masks = masks * 20.0 - 10.0  # sigmoid_scale_for_mem_enc, sigmoid_bias_for_mem_enc
        features, _ = model.memory_encoder(feature, jnp.transpose(masks, (0, 2, 3, 1)), skip_mask_sigmoid=True)
        if model.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).astype(features.dtype)[:, :, None, None]
            features = features + absent * model.no_obj_embed_spatial[...].astype(features.dtype)
        batch = features.shape[0]
        return features.reshape(batch, -1, features.shape[-1]).astype(self.dtype)  # bf16 at inference, as official

    def mask_as_output(self, model, fpn, mask):
        """A mask prompt (`_use_mask_as_output`, `use_mask_input_as_output_without_sam`): the mask *is* the output.

        mask [B, 1, H, W] float 0/1. As the official code: resized to the model's input size with antialiased
        bilinear interpolation and thresholded at 0.5 (when not already that size), logits +-10, low-res masks by
        antialiased downsampling, the object pointer from the SAM heads prompted by the (conv-downsampled) mask on the
        raw image features, the object score from whether the mask has any pixel. Returns low_res [B, 1, h, w],
        high_res [B, 1, S, S], obj_ptr [B, 256], object_score_logits [B, 1].
        """
        size, low = self.config.image_size, self.config.image_size // 4
        if mask.shape[-2:] != (size, size):
            mask = resize_hw(mask, (size, size), lambda a, b: bilinear_matrix(a, b, True), axes=(2, 3))
            mask = (mask >= 0.5).astype(jnp.float32)
        high_res = mask * 20.0 - 10.0
        low_res = resize_hw(high_res, (low, low), lambda a, b: bilinear_matrix(a, b, True), axes=(2, 3))
        downsampled = model.mask_downsample(jnp.transpose(mask, (0, 2, 3, 1)).astype(fpn[2].dtype))
        out = model.forward_sam_heads(fpn[2], None, None, jnp.transpose(downsampled, (0, 3, 1, 2)),
                                      (fpn[0], fpn[1]), multimask_output=False)
        appearing = (mask > 0).any(axis=(1, 2, 3))[:, None].astype(jnp.float32)
        obj_ptr = appearing * out["obj_ptr"].astype(jnp.float32) + (1 - appearing) * model.no_obj_ptr[...].astype(
            jnp.float32)
        return {"low_res_masks": low_res, "high_res_masks": high_res, "obj_ptr": obj_ptr,
                "object_score_logits": 20.0 * appearing - 10.0}


class SAM2VideoPredictor(MemoryBank):
    """Tracks several objects through a stream of frames (uint8 RGB, all of one size) with a bounded memory bank."""

    def __init__(self, model: SAM2, *, num_frames: int | None = None, max_obj_ptrs: int = 16,
                 max_cond_frames: int = 3):
        """`num_frames` (if the video length is known) caps the object-pointer window like the official predictor;
        `max_cond_frames` is the number of prompted frames each object keeps in memory (the most recent ones)."""
        if not isinstance(model, SAM2):
            raise TypeError(f"SAM2VideoPredictor needs a models.sam2.SAM2 model; got {type(model).__name__}")
        if max_cond_frames < 1:
            raise ValueError(f"max_cond_frames must be >= 1; got {max_cond_frames}")
        window = min(num_frames, max_obj_ptrs) if num_frames else max_obj_ptrs
        super().__init__(model.config, max_obj_ptrs=max(window, 1), num_cond_slots=max_cond_frames,
                         num_ptr_slots=max(max_obj_ptrs - 1, 1))
        self.model = model
        self._graphdef, self._params = nnx.split(model)
        self._features = jax.jit(self._features_fn)
        self._track_step = jax.jit(self._track_fn, donate_argnums=(3,), static_argnames=("num_frames",))
        self._prompt_step = jax.jit(self._prompt_fn, donate_argnums=(3,),
                                    static_argnames=("with_memory", "multimask_output", "num_frames"))
        self._mask_step = jax.jit(self._mask_fn, donate_argnums=(2,))
        self._to_video = jax.jit(lambda m, hw: resize_hw(m, hw, bilinear_matrix, axes=(1, 2)), static_argnums=1)
        self.reset()

    def reset(self) -> None:
        """Forget every object, frame and prompt."""
        self.obj_ids: list[Any] = []
        self.bank: dict[str, jax.Array] | None = None
        self.meta: dict[str, np.ndarray] = {}
        self.video_hw: tuple[int, int] | None = None
        self._cached: tuple[int, Any] | None = None  # (frame index, features) of the latest frame

    def _add_object(self, obj_id: Any) -> int:
        self.obj_ids.append(obj_id)
        new_bank, new_meta = self.empty_bank(1), self.empty_meta(1)
        if self.bank is None:
            self.bank = new_bank
            self._set_meta(new_meta)
        else:
            self.bank = {k: jnp.concatenate([v, new_bank[k]]) for k, v in self.bank.items()}
            self._set_meta({k: np.concatenate([v, new_meta[k]]) for k, v in self.meta.items()})
        return len(self.obj_ids) - 1

    def _set_meta(self, new: dict[str, np.ndarray]) -> None:
        # One `meta` dict for the predictor's lifetime (until `reset`): a reference to `predictor.meta` taken
        # earlier always shows the current slots. `mark_tracked` / `mark_prompt` return new arrays.
        self.meta.update(new)

    # -- jitted pieces ------------------------------------------------------------------------------------------------

    def _features_fn(self, params, images):
        out = nnx.merge(self._graphdef, params).forward_image(images)
        return out["backbone_fpn"], out["vision_pos_enc"][-1]

    def _track_fn(self, params, fpn, pos, bank, meta, frame_idx, sign, write, cond_slot, num_frames=None):
        """One tracked frame for every object; objects prompted on this frame (write False) keep their prompt mask.
        Compiled once per memory-frame bucket `num_frames` (`frames_in_attention`)."""
        model = nnx.merge(self._graphdef, params)
        count = bank["mem"].shape[0]
        fpn = [jnp.broadcast_to(f, (count, *f.shape[1:])) for f in fpn]
        pix_feat = self.condition(model, fpn[2], pos, bank, meta, frame_idx, sign, num_frames)
        out = model.forward_sam_heads(pix_feat, None, None, None, (fpn[0], fpn[1]), multimask_output=True)
        features = self.encode_memory(model, fpn[2], out["high_res_masks"], out["object_score_logits"], False)
        bank = self.write_tracked(bank, frame_idx, features, out["obj_ptr"], write)
        prompted = jnp.take_along_axis(bank["cond_masks"], cond_slot[:, None, None, None], axis=1)[:, 0]
        masks = jnp.where(write[:, None, None], out["low_res_masks"][:, 0], prompted)
        bank["last_masks"] = masks
        return bank, masks

    def _prompt_fn(self, params, fpn, pos, bank, meta, frame_idx, sign, obj, slot, coords, labels, mask_inputs, *,
                   with_memory, multimask_output, num_frames=None):
        """Prompt object `obj` on this frame: heads (memory-conditioned if the frame was tracked), prompt memory."""
        model = nnx.merge(self._graphdef, params)
        if with_memory:
            one = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, obj, 1), (bank, meta))
            pix_feat = self.condition(model, fpn[2], pos, *one, frame_idx, sign, num_frames)
        else:  # an initial conditioning frame: `directly_add_no_mem_embed`
            pix_feat = fpn[2] + model.no_mem_embed[...].astype(fpn[2].dtype)
        out = model.forward_sam_heads(pix_feat, coords, labels, mask_inputs, (fpn[0], fpn[1]), multimask_output)
        size = self.config.image_size
        high_res = resize_hw(out["low_res_masks"], (size, size), bilinear_matrix, axes=(2, 3))
        features = self.encode_memory(model, fpn[2], high_res, out["object_score_logits"], True)
        return self._write_prompt(bank, obj, slot, features[0], out["obj_ptr"][0], out["low_res_masks"][0, 0])

    def _write_prompt(self, bank, obj, slot, features, obj_ptr, low_res):
        return self.write_prompt(bank, slot, features, obj_ptr, low_res, rows=obj), low_res[None]

    def _mask_fn(self, params, fpn, bank, obj, slot, mask):
        """A mask prompt on one object (`mask_as_output`); its memory is encoded from the upsampled low-res masks,
        binarised, as `propagate_in_video_preflight` does."""
        model = nnx.merge(self._graphdef, params)
        out = self.mask_as_output(model, fpn, mask[None, None])
        size = self.config.image_size
        for_memory = resize_hw(out["low_res_masks"], (size, size), bilinear_matrix, axes=(2, 3))
        features = self.encode_memory(model, fpn[2], for_memory, out["object_score_logits"], True)
        return self._write_prompt(bank, obj, slot, features[0], out["obj_ptr"][0], out["low_res_masks"][0, 0])

    # -- public API ---------------------------------------------------------------------------------------------------

    def add_points(self, frame_idx: int, image: np.ndarray, obj_id: Any = 0, points: Any = None, labels: Any = None,
                   box: Any = None) -> np.ndarray:
        """Prompt object `obj_id` (new or known) on frame `frame_idx`; returns its (H, W) mask logits on that frame.

        points (N, 2) (x, y) pixels with labels (N,) 1/0; box (4,) x0, y0, x1, y1 (placed before the points).
        The frame becomes a prompted (conditioning) frame of the object. Prompting the frame the object was last
        segmented on refines that mask (it is the mask input), and when that frame was tracked the prediction is
        memory-conditioned (in the direction it was tracked), as the official predictor does for a correction click.
        """
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("add_points needs points/labels or a box (or use add_mask)")
        fpn, pos = self._frame_features(frame_idx, image)
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
        obj, slot = self._prompt_slot(obj_id, frame_idx)
        meta = self.meta
        tracked = (meta["mem_valid"][obj] & (meta["mem_frame"][obj] == frame_idx)).any()
        refine = meta["last_frame"][obj] == frame_idx
        mask_inputs = jnp.clip(self.bank["last_masks"][obj][None, None], -32.0, 32.0) if refine else None
        one_meta = {key: meta[key][obj: obj + 1] for key in META_KEYS}
        num_frames = self.frames_in_attention(one_meta, frame_idx, int(meta["sign"][obj])) if tracked else None
        # Multimask only for 0 or 1 click (multimask_min/max_pt_num), as in `SAM2Base._use_multimask`.
        self.bank, masks = self._prompt_step(
            self._params, fpn, pos, self.bank, self._device_meta(), np.int32(frame_idx), np.int32(meta["sign"][obj]),
            np.int32(obj), np.int32(slot), *to_device((scaled[None], point_labels[None])), mask_inputs,
            with_memory=bool(tracked), multimask_output=len(point_labels) <= 1, num_frames=num_frames,
        )
        return self._prompted(obj, slot, frame_idx, masks)

    def add_mask(self, frame_idx: int, image: np.ndarray, obj_id: Any = 0, mask: Any = None) -> np.ndarray:
        """Prompt object `obj_id` on frame `frame_idx` with a binary (H, W) mask at video resolution.

        As the official `add_new_mask`: the mask is taken as the output on that frame (no memory, no decoder
        mask), the frame becomes a prompted frame. Returns the (H, W) mask logits (about +-10).
        """
        fpn, _ = self._frame_features(frame_idx, image)
        mask = np.asarray(mask)
        if mask.shape != self.video_hw:
            raise ValueError(f"add_mask needs one (H, W) = {self.video_hw} mask (the frame's size); got shape "
                             f"{mask.shape}")
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise ValueError("add_mask needs a binary mask (bool or 0/1); threshold logits or probabilities first")
        obj, slot = self._prompt_slot(obj_id, frame_idx)
        self.bank, masks = self._mask_step(self._params, fpn, self.bank, np.int32(obj), np.int32(slot),
                                           to_device(mask.astype(np.float32)))
        return self._prompted(obj, slot, frame_idx, masks)

    def track(self, frame_idx: int, image: np.ndarray, reverse: bool = False) -> np.ndarray:
        """Segment every object in a new frame from its memories; returns (num_objects, H, W) mask logits.

        Rows follow `self.obj_ids`. Objects prompted on this frame return their prompt mask. reverse=True tracks
        backwards in time (frames fed in decreasing order, like the official `propagate_in_video(reverse=True)`):
        the memories and object pointers then come from the later frames.
        """
        if not self.obj_ids:
            raise RuntimeError("prompt an object with add_points(...) or add_mask(...) before tracking")
        fpn, pos = self._frame_features(frame_idx, image)
        meta = self.meta
        is_cond = meta["cond_valid"] & (meta["cond_frame"] == frame_idx)
        write = ~is_cond.any(axis=1)
        cond_slot = np.argmax(is_cond, axis=1).astype(np.int32)
        sign = -1 if reverse else 1
        self.bank, masks = self._track_step(self._params, fpn, pos, self.bank, self._device_meta(),
                                            np.int32(frame_idx), np.int32(sign), *to_device((write, cond_slot)),
                                            num_frames=self.frames_in_attention(meta, frame_idx, sign))
        self._set_meta(self.mark_tracked(meta, frame_idx, write))
        meta["last_frame"][:] = frame_idx
        meta["sign"][write] = sign
        return np.asarray(self._to_video(masks, self.video_hw))

    def state_nbytes(self) -> int:
        """Bytes held by the memory bank on the device (constant once the objects are known)."""
        return sum(int(x.nbytes) for x in jax.tree.leaves(self.bank))

    # -- helpers ------------------------------------------------------------------------------------------------------

    def _device_meta(self) -> dict[str, jax.Array]:
        # `meta` is updated in place right after the (asynchronous) step is dispatched: see `to_device`.
        return to_device({k: self.meta[k] for k in META_KEYS})

    def _prompt_slot(self, obj_id: Any, frame_idx: int) -> tuple[int, int]:
        """(object row, prompted-frame slot) for a prompt; a new obj_id adds an object."""
        obj = self.obj_ids.index(obj_id) if obj_id in self.obj_ids else self._add_object(obj_id)
        return obj, self._cond_slot(obj, frame_idx)

    def _prompted(self, obj: int, slot: int, frame_idx: int, masks: jax.Array) -> np.ndarray:
        """Bookkeeping after a prompt step: the frame is now a prompted frame of the object."""
        self._set_meta(self.mark_prompt(self.meta, frame_idx, slot, rows=obj))
        self.meta["last_frame"][obj] = frame_idx
        return np.asarray(self._to_video(masks, self.video_hw))[0]

    def _cond_slot(self, obj: int, frame_idx: int) -> int:
        """The prompted-frame slot for (obj, frame): the frame's own, a free one, else the oldest prompted frame's."""
        frames, valid = self.meta["cond_frame"][obj], self.meta["cond_valid"][obj]
        same = np.flatnonzero(valid & (frames == frame_idx))
        if same.size:
            return int(same[0])
        free = np.flatnonzero(~valid)
        if free.size:
            return int(free[0])
        return int(np.argmin(frames))

    def _frame_features(self, frame_idx: int, image: np.ndarray):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 RGB arrays (H, W, 3); got {getattr(image, 'shape', type(image).__name__)} "
                f"{getattr(image, 'dtype', '')}"
            )
        if self.video_hw is None:
            self.video_hw = (int(image.shape[0]), int(image.shape[1]))
        elif image.shape[:2] != self.video_hw:
            raise ValueError(f"frame of size {image.shape[:2]} in a video of size {self.video_hw}")
        if self._cached is None or self._cached[0] != frame_idx:
            images = to_device(preprocess(image, self.config.image_size)[None])
            self._cached = (frame_idx, self._features(self._params, images))
        return self._cached[1]


class SAM2VideoTracker:
    """One object through a stream of frames: `SAM2VideoPredictor` with a single object, (1, H, W) outputs."""

    def __init__(self, model: SAM2, *, num_frames: int | None = None, max_obj_ptrs: int = 16,
                 max_cond_frames: int = 3):
        self.predictor = SAM2VideoPredictor(model, num_frames=num_frames, max_obj_ptrs=max_obj_ptrs,
                                            max_cond_frames=max_cond_frames)

    def reset(self) -> None:
        """Forget every frame and prompt."""
        self.predictor.reset()

    def add_points(self, frame_idx: int, image: np.ndarray, points: Any = None, labels: Any = None,
                   box: Any = None) -> np.ndarray:
        """Prompt the object on frame `frame_idx`; returns (1, H, W) mask logits (see `SAM2VideoPredictor`)."""
        return self.predictor.add_points(frame_idx, image, 0, points, labels, box)[None]

    def add_mask(self, frame_idx: int, image: np.ndarray, mask: Any) -> np.ndarray:
        """Prompt the object on frame `frame_idx` with a binary (H, W) mask; returns (1, H, W) mask logits."""
        return self.predictor.add_mask(frame_idx, image, 0, mask)[None]

    def track(self, frame_idx: int, image: np.ndarray, reverse: bool = False) -> np.ndarray:
        """Segment the object in a new frame from the memories; returns (1, H, W) mask logits."""
        return self.predictor.track(frame_idx, image, reverse)
