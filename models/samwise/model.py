"""The SAMWISE model (official `models/samwise.py`): frozen SAM2 + frozen RoBERTa, fused by trained CMT adapters,
prompted by the adapted text, with the Conditional Memory Encoder deciding when the memory should switch object.

One clip of T frames goes through three steps (`__call__`):

1. **Early fusion** (`encode_clip`, official `_early_fusion_stage` + `_forward_fpn`): the Hiera stages and the text
   encoder's layers run interleaved, stage i with text layers [0, 1), [1, 4), [4, 8), [8, 12) (`fusion_stages_txt`
   (4, 8, 12) with 0 and 1 prepended); after stages `fusion_stages` (1, 2, 3: the 2nd-4th) a `CMTAdapter` sees the
   clip's visual features and the text and both streams get its updates as residuals. The four stage outputs go
   through SAM2's FPN neck (the lowest level dropped, `conv_s0` / `conv_s1` on the two high-resolution levels). The
   text prompt is the adapted `<s>` (CLS) token.
2. **Per frame, in order** (`compute_decoder_out_w_mem` and the loop of `SAMWISE.forward`): the stride-16 feature is
   memory-conditioned (frame 0: `+ no_mem_embed`; later frames: memory attention over the last 6 frames' memories and
   up to 15 object pointers, `models.sam2.video.MemoryBank`, no prompted frames), then SAM2's mask decoder runs with
   sparse prompt [empty point, padding point, `project_text(CLS)`] and no mask prompt; single-mask output (token 0).
   The decoder also gives the *early* object pointer: mask token 0 after the first two-way layer (not projected).
3. **CME** (when `use_cme_head`, on frames with idx - last_applied >= window - 1 and idx > window): a memory-less
   decoder pass (`+ no_mem_embed`), `ConditionalMemoryEncoder(obj_ptr with memory, early obj ptr without)`. At
   evaluation, class 1 ("a caption-aligned object appeared") changes the mask the memory encoder sees by
   `switch_mem`: `reweight` (hm > 0 -> 10 hm), `all_mask` (hm) or `avg` ((m + hm) / 2), hm = the memory-less logits;
   the frame's returned mask is unchanged. In training the decision is not applied; the CME's label
   (`same_object_labels`) comes with its logits for the loss.
4. The memory encoder encodes sigmoid(mask) * 20 - 10 with the frame's un-conditioned feature.

Layouts: frames NHWC, already normalised (ImageNet mean / std), at most image_size on each side; they are zero-padded
bottom / right to image_size^2 (the official `preprocess`), and the mask logits are cropped back. Token ids [B, L]
with their attention mask (1 = real token).

Trainable: the parameters whose path contains `adapter`, `conditional_memory_encoder` or `project_text` (the official
rule, `FROZEN_PATTERNS` for `optimizer.frozen`); SAM2 and the text encoder are frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.sam2.layers import Dtype, KeyStream, bilinear_matrix, resize_hw
from models.sam2.model import NO_OBJ_SCORE, SAM2, TRUNKS, SAM2Config
from models.sam2.video import META_KEYS, MemoryBank
from models.samwise.adapter import CMTAdapter
from models.samwise.cme import ConditionalMemoryEncoder, project_text
from models.text.model import TextEncoder, key_padding_mask
from models.text.variants import ROBERTA_BASE

SWITCH_POLICIES = ("reweight", "all_mask", "avg")
# The official freezing rule (`build_samwise`): everything whose name has none of these words is frozen. A regex for
# `optimizer.frozen` (`zoo.train.optim.trainable_filter` full-matches dotted NNX paths).
TRAINABLE_WORDS = ("adapter", "conditional_memory_encoder", "project_text")
FROZEN_PATTERNS = (rf"(?!.*(?:{'|'.join(TRAINABLE_WORDS)})).*",)


@dataclasses.dataclass(frozen=True)
class SAMWISEConfig:
    """SAMWISE hyper-parameters (the official `opts.py` defaults of the released runs).

    sam2_variant: the SAM 2.0 Hiera trunk ("t", "b+" (official default `--sam2_version base`), "l").
    text_encoder: keyword arguments of `models.text.TextEncoder` (RoBERTa-base; no pooler is built).
    fusion_stages_txt: text-layer ends of Hiera stages 2-4 (0 and 1 are prepended: stage 1 runs text layer 0).
    fusion_stages: the stages (0-based) followed by an adapter; hsa_patch_sizes: their HSA patch sides.
    cme_decision_window: at least this many frames between two applied CME decisions (`--cme_decision_window`).
    switch_mem: how a positive CME decision changes the memory's mask ("reweight", "all_mask", "avg").
    """

    sam2_variant: str = "b+"
    image_size: int = 1024
    text_encoder: tuple[tuple[str, Any], ...] = tuple(ROBERTA_BASE.items())
    text_dropout: float = 0.1
    fusion_stages_txt: tuple[int, ...] = (4, 8, 12)
    fusion_stages: tuple[int, ...] = (1, 2, 3)
    adapter_dim: int = 256
    use_hsa: bool = True
    hsa_patch_sizes: tuple[int, ...] = (8, 4, 2)
    use_cme_head: bool = True
    cme_decision_window: int = 4
    switch_mem: str = "reweight"
    cme_dropout: float = 0.1
    max_obj_ptrs: int = 16

    def text_boundaries(self) -> list[int]:
        """Text-layer boundaries of the stages: stage i runs layers [b[i], b[i + 1])."""
        return [0, 1, *self.fusion_stages_txt]


def same_object_labels(masks_mem: jax.Array, masks_no_mem: jax.Array, no_mem_score: jax.Array,
                       empty_threshold: int = 50) -> jax.Array:
    """The CME's training label (official `get_same_object_labels`), per example: int32 [B].

    masks [B, H, W] logits of the decoder with and without memory; no_mem_score [B, 1] the memory-less object score.
    -1 (ignored) when the memory-less score is < 0 or both masks have <= 50 pixels; 1 ("another object") when their
    intersection is < 0.1 of the smaller area; 0 otherwise. When one mask is empty (and the other is not) the ratio is
    0 / 0 = nan, which is not < 0.1: label 0, as the official code computes it (its comment expects 1).
    """
    a, b = masks_mem > 0, masks_no_mem > 0
    inter = jnp.sum(a & b, axis=(1, 2)).astype(jnp.float32)
    area_a = jnp.sum(a, axis=(1, 2))
    area_b = jnp.sum(b, axis=(1, 2))
    ratio = inter / jnp.minimum(area_a, area_b).astype(jnp.float32)
    label = jnp.where(ratio < 0.1, 1, 0)
    label = jnp.where((area_a <= empty_threshold) & (area_b <= empty_threshold), -1, label)
    return jnp.where(no_mem_score[:, 0] < 0, -1, label).astype(jnp.int32)


def apply_switch(policy: str, high_res_masks: jax.Array, no_mem_masks: jax.Array) -> jax.Array:
    """The mask the memory encoder sees after a positive CME decision (official `apply_decision`)."""
    if policy == "reweight":
        return jnp.where(no_mem_masks > 0, no_mem_masks * 10, high_res_masks)
    if policy == "all_mask":
        return no_mem_masks
    if policy == "avg":
        return (high_res_masks + no_mem_masks) / 2
    raise ValueError(f"switch_mem must be one of {SWITCH_POLICIES}; got {policy!r}")


class _BuildStreams(KeyStream):
    """`KeyStream` (linear-time abstract construction, see there) for the parameters, the caller's `nnx.Rngs` for the
    dropout streams the text encoder and the CME fork."""

    def __init__(self, rngs: nnx.Rngs):
        super().__init__(rngs.params())
        self._rngs = rngs

    def __getitem__(self, name: str):
        return self._rngs[name]


class SAMWISE(nnx.Module):
    """SAMWISE (see the module docstring). Submodules under the official names: `sam` (a SAM 2.0 `SAM2`),
    `text_encoder`, `cmt_adapters.{0,1,2}`, `conditional_memory_encoder`; `project_text` (official
    `sam.sam_prompt_encoder.project_text`) sits at the top level, so `sam` stays a plain SAM2."""

    def __init__(self, config: SAMWISEConfig = SAMWISEConfig(), *, attention_impl: str = "auto", dtype: Dtype = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self._check(config)
        rngs = _BuildStreams(rngs)
        self.config = config
        self.dtype = dtype
        common = {"dtype": dtype, "param_dtype": param_dtype}
        # No dynamic multimask fallback: SAMWISE builds the decoder without the official `apply_postprocessing`.
        self.sam = SAM2(SAM2Config(variant=config.sam2_variant, version="2.0", image_size=config.image_size,
                                   dynamic_multimask_via_stability=False),
                        attention_impl=attention_impl, rngs=rngs, **common)
        text_kwargs = dict(config.text_encoder)
        text_kwargs.update(add_pooling_layer=False, dropout_rate=config.text_dropout)
        self.text_encoder = TextEncoder(attention_impl=attention_impl, rngs=rngs, **text_kwargs, **common)
        text_dim = self.text_encoder.hidden_size
        hidden = self.sam.config.hidden_dim
        channels = self.sam.config.trunk.channels
        self.cmt_adapters = nnx.List([
            CMTAdapter(channels[stage], text_dim, config.adapter_dim, hsa_patch_size=patch, use_hsa=config.use_hsa,
                       attention_impl=attention_impl, rngs=rngs, **common)
            for stage, patch in zip(config.fusion_stages, config.hsa_patch_sizes, strict=True)
        ])
        self.conditional_memory_encoder = ConditionalMemoryEncoder(hidden, dropout=config.cme_dropout,
                                                                   attention_impl=attention_impl, rngs=rngs, **common)
        self.project_text = project_text(text_dim, hidden, rngs=rngs, **common)

    @staticmethod
    def _check(config: SAMWISEConfig) -> None:
        if config.sam2_variant not in TRUNKS:
            raise ValueError(f"unknown SAM2 variant {config.sam2_variant!r}; expected one of {sorted(TRUNKS)}")
        stages = len(TRUNKS[config.sam2_variant].stages)
        bounds = config.text_boundaries()
        if len(bounds) != stages + 1 or any(b > a for a, b in zip(bounds[1:], bounds[:-1], strict=False)):
            raise ValueError(f"fusion_stages_txt {config.fusion_stages_txt} must give increasing text-layer ends for "
                             f"Hiera stages 2..{stages} ({stages - 1} values)")
        layers = dict(config.text_encoder).get("num_layers", 12)
        if bounds[-1] > layers:
            raise ValueError(f"fusion_stages_txt runs text layers up to {bounds[-1]}, the text encoder has {layers}")
        if len(config.hsa_patch_sizes) != len(config.fusion_stages):
            raise ValueError(f"{len(config.fusion_stages)} adapters (fusion_stages {config.fusion_stages}) need as "
                             f"many hsa_patch_sizes; got {config.hsa_patch_sizes}")
        if any(not 0 <= s < stages for s in config.fusion_stages):
            raise ValueError(f"fusion_stages {config.fusion_stages} must be Hiera stages 0..{stages - 1}")
        if config.switch_mem not in SWITCH_POLICIES:
            raise ValueError(f"switch_mem must be one of {SWITCH_POLICIES}; got {config.switch_mem!r}")

    # ---------------------------------------------------------------------------------------------------------------
    # Step 1: early fusion of Hiera and the text encoder
    # ---------------------------------------------------------------------------------------------------------------

    def encode_clip(self, images: jax.Array, tokens: jax.Array, mask: jax.Array, *, clip_length: int,
                    train: bool = False, rngs=None) -> dict[str, Any]:
        """images [B T, S, S, 3] (S = image_size, padded), tokens / mask [B, L] -> {"backbone_fpn": [s4 (32 ch),
        s8 (64 ch), s16 (256 ch)] NHWC, "vision_pos_enc": [1, S/16, S/16, 256], "text_state": [B, C_txt] (the adapted
        CLS token), "text": [B, L, C_txt] (the adapted text)}."""
        trunk = self.sam.image_encoder.trunk
        text = self.text_encoder
        if self.dtype is not None:
            images = images.astype(self.dtype)
        vis = trunk.embed(images)
        # Padded positions are zeroed after the embedding, as the official `preprocess_text_features`.
        txt = text.embed(tokens, mask, train=train, rngs=rngs) * (mask != 0)[..., None].astype(images.dtype)
        attn_mask = key_padding_mask(mask)
        bounds = self.config.text_boundaries()
        outs = []
        for stage in range(trunk.num_stages):
            vis = trunk.forward_stage(stage, vis)
            for index in range(bounds[stage], bounds[stage + 1]):
                txt = text.layer(index)(txt, attn_mask, train=train, rngs=rngs)
            if stage in self.config.fusion_stages:
                adapter = self.cmt_adapters[self.config.fusion_stages.index(stage)]
                v, t = adapter(vis, txt, clip_length=clip_length, train=train)
                vis, txt = vis + v, txt + t
            outs.append(vis)
        features, positions = self.sam.image_encoder.neck(outs)
        scalp = self.sam.image_encoder.scalp
        features, positions = features[:-scalp], positions[:-scalp]
        decoder = self.sam.sam_mask_decoder
        fpn = [decoder.conv_s0(features[0]), decoder.conv_s1(features[1]), features[2]]
        return {"backbone_fpn": fpn, "vision_pos_enc": positions[-1][:1], "text_state": txt[:, 0], "text": txt}

    # ---------------------------------------------------------------------------------------------------------------
    # Step 2: the text-prompted SAM heads
    # ---------------------------------------------------------------------------------------------------------------

    def sam_heads(self, pix_feat: jax.Array, text_state: jax.Array, high_res: tuple[jax.Array, jax.Array], *,
                  train: bool = False, early: bool = False) -> dict[str, jax.Array]:
        """Official `SAM2Base._forward_sam_heads` with `text_inputs` and `multimask_output=False`.

        pix_feat [N, h, w, 256] (memory-conditioned or + no_mem_embed), text_state [N, C_txt], high_res (s4, s8)
        features. Returns low_res_masks [N, 1, 4h, 4w] and high_res_masks [N, 1, S, S] float32 logits (where the
        object score is <= 0 they are -1024 at evaluation, as officially; not in training), obj_ptr [N, 256],
        object_score_logits [N, 1], and with `early` the early object pointer [N, 256] (mask token 0 after the first
        two-way layer).
        """
        sam = self.sam
        prompt, decoder = sam.sam_prompt_encoder, sam.sam_mask_decoder
        count = pix_feat.shape[0]
        no_points = (jnp.zeros((count, 1, 2), jnp.float32), -jnp.ones((count, 1), jnp.int32))
        sparse, dense = prompt(no_points, None, None)  # [empty point, padding point], no_mask_embed
        text_token = self.project_text(text_state)[:, None]
        sparse = jnp.concatenate([sparse, text_token.astype(sparse.dtype)], axis=1)
        image_pe = prompt.dense_pe()
        masks, _, tokens, object_score_logits = decoder.predict_masks(pix_feat, image_pe, sparse, dense,
                                                                       tuple(high_res))
        low_res = masks[:, :1].astype(jnp.float32)
        is_object = object_score_logits > 0
        if not train:
            low_res = jnp.where(is_object[:, :, None, None], low_res, NO_OBJ_SCORE)
        size = sam.config.image_size
        high_res_masks = resize_hw(low_res, (size, size), bilinear_matrix, axes=(2, 3))
        obj_ptr = sam.obj_ptr_proj(tokens[:, 0])
        appearing = is_object.astype(obj_ptr.dtype)
        obj_ptr = appearing * obj_ptr + (1 - appearing) * sam.no_obj_ptr[...].astype(obj_ptr.dtype)
        out = {"low_res_masks": low_res, "high_res_masks": high_res_masks, "obj_ptr": obj_ptr,
               "object_score_logits": object_score_logits}
        if early:
            out["early_obj_ptr"] = self._early_obj_ptr(pix_feat, image_pe, sparse, dense)
        return out

    def _early_obj_ptr(self, pix_feat, image_pe, sparse, dense) -> jax.Array:
        """Mask token 0 after the first two-way layer (SAMWISE's `first_layer_queries`). The port's decoder returns
        only the final tokens, so the first layer runs once more on the same inputs (a few tokens x h w keys)."""
        decoder = self.sam.sam_mask_decoder
        count = sparse.shape[0]
        output_tokens = jnp.concatenate(
            [decoder.obj_score_token[...], decoder.iou_token[...], decoder.mask_tokens[...]], axis=0
        ).astype(sparse.dtype)
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens[None], (count, *output_tokens.shape)), sparse], 1)
        src = pix_feat + dense
        batch, height, width, channels = src.shape
        keys = src.reshape(batch, height * width, channels)
        key_pe = jnp.broadcast_to(image_pe, src.shape).astype(src.dtype).reshape(batch, height * width, channels)
        queries, _ = decoder.transformer.layers[0](tokens, keys, tokens, key_pe)
        return queries[:, 2]  # after the object-score and IoU tokens

    # ---------------------------------------------------------------------------------------------------------------
    # Steps 2-4 over a clip, with memory
    # ---------------------------------------------------------------------------------------------------------------

    def memory_bank(self) -> MemoryBank:
        """The fixed-slot memory layout: no prompted frames, the last num_maskmem - 1 memories, max_obj_ptrs - 1
        pointers, float32 (the official SAMWISE keeps its memories in float32)."""
        ptrs = self.config.max_obj_ptrs
        return MemoryBank(self.sam.config, max_obj_ptrs=ptrs, num_cond_slots=0, num_ptr_slots=max(ptrs - 1, 1),
                          dtype=jnp.float32)

    def initial_state(self, batch: int) -> dict[str, Any]:
        """An empty memory for `batch` videos (what a new video starts from)."""
        memory = self.memory_bank()
        meta = {k: jnp.asarray(v) for k, v in memory.empty_meta(batch).items() if k in META_KEYS}
        return {"bank": memory.empty_bank(batch), "meta": meta, "last_applied": jnp.zeros((batch,), jnp.int32),
                "next_frame": jnp.zeros((), jnp.int32)}

    def __call__(self, frames: jax.Array, tokens: jax.Array, mask: jax.Array | None = None, *, train: bool = False,
                 state: dict[str, Any] | None = None, rngs=None) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        """Segment B clips of T frames: frames [B, T, H, W, 3] normalised (H, W <= image_size), tokens [B, L] int,
        mask [B, L] (1 = real token; default tokens != pad).

        state: None for clips that start their videos (frame indices 0..T-1, the training case), or the state a
        previous call returned, to continue the videos (memory, last CME decision and frame index carried, as the
        official inference that keys its memory bank by absolute frame id). `initial_state(B)` also starts them, with
        the same results as None, through the same compiled function as every later clip (streaming: one compile).

        Returns (outputs, state). outputs: "masks" [B, T, H, W] float32 logits; "low_res_masks" [B, T, S/4, S/4];
        "obj_ptr" / "early_obj_ptr" [B, T, 256] (the early pointer of the memory-conditioned pass);
        "object_score_logits" [B, T]; with the CME head: "cme_logits" [B, T, 2] (zeros where it did not run),
        "cme_ran" [B, T] bool, and in training "cme_labels" [B, T] int32 (-1 where ignored or not run), at evaluation
        "cme_applied" [B, T] bool (the decision switched the memory).
        """
        cfg = self.config
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"SAMWISE expects normalised clips [B, T, H, W, 3]; got shape {frames.shape}")
        batch, clip_length, height, width, _ = frames.shape
        size = cfg.image_size
        if height > size or width > size:
            raise ValueError(f"frames of {height}x{width} exceed image_size {size}: resize the long side to {size}")
        if tokens.ndim != 2 or tokens.shape[0] != batch:
            raise ValueError(f"tokens must be [B, L] with B = {batch} clips; got shape {tokens.shape}")
        mask = self.text_encoder.default_mask(tokens, mask)
        # The official `preprocess`: zero padding at the bottom and right (no squashing to a square).
        images = jnp.pad(frames.reshape(batch * clip_length, height, width, 3),
                         ((0, 0), (0, size - height), (0, size - width), (0, 0)))
        encoded = self.encode_clip(images, tokens, mask, clip_length=clip_length, train=train, rngs=rngs)
        fpn = [f.reshape(batch, clip_length, *f.shape[1:]) for f in encoded["backbone_fpn"]]
        pos = encoded["vision_pos_enc"]
        text_state = encoded["text_state"]
        memory = self.memory_bank()
        starts_video = state is None
        state = self.initial_state(batch) if starts_video else state
        bank, meta, last_applied = state["bank"], dict(state["meta"]), state["last_applied"]
        start = 0 if starts_video else state["next_frame"]
        no_mem_embed = self.sam.no_mem_embed[...]
        window = cfg.cme_decision_window
        keys = ("low_res_masks", "obj_ptr", "early_obj_ptr", "object_score_logits", "masks", "cme_logits",
                "cme_ran", "cme_labels", "cme_applied")
        outputs: dict[str, list] = {k: [] for k in keys}
        for t in range(clip_length):
            index = start + t  # a Python int for clips that start their videos, else traced
            feat, high_res = fpn[2][:, t], (fpn[0][:, t], fpn[1][:, t])
            no_mem_feat = feat + no_mem_embed.astype(feat.dtype)
            if starts_video and t == 0:
                pix_feat = no_mem_feat  # `directly_add_no_mem_embed`
            else:
                pix_feat = memory.condition(self.sam, feat, pos, bank, meta, index, 1)
                if not starts_video:  # a carried state may start its video (`initial_state`): frame 0 has no memory
                    pix_feat = jnp.where(index == 0, no_mem_feat, pix_feat)
            out = self.sam_heads(pix_feat, text_state, high_res, train=train, early=True)
            for_memory = out["high_res_masks"]
            masks = out["high_res_masks"][:, 0, :height, :width]
            ran = jnp.zeros((batch,), bool)
            cme_logits = jnp.zeros((batch, 2), jnp.float32)
            labels = -jnp.ones((batch,), jnp.int32)
            applied = jnp.zeros((batch,), bool)
            # idx > window is static for clips that start their videos (frame indices are Python ints), traced for
            # continued ones; the test on the last applied decision is traced (always passes in training, where no
            # decision is applied and last_applied stays 0).
            eligible = (not starts_video) or index > window
            if cfg.use_cme_head and eligible:
                ran = (index - last_applied >= window - 1) & (index > window)
                alt = self.sam_heads(no_mem_feat, text_state, high_res, train=train, early=True)
                cme_logits = self.conditional_memory_encoder(
                    jax.lax.stop_gradient(out["obj_ptr"]), jax.lax.stop_gradient(alt["early_obj_ptr"]),
                    train=train, rngs=rngs).astype(jnp.float32)
                if train:  # the decision is learnt, never applied, in training
                    labels = jnp.where(ran, same_object_labels(masks, alt["high_res_masks"][:, 0, :height, :width],
                                                               alt["object_score_logits"]), -1)
                else:
                    applied = ran & (jnp.argmax(cme_logits, axis=-1) == 1)
                    switched = apply_switch(cfg.switch_mem, for_memory, alt["high_res_masks"])
                    for_memory = jnp.where(applied[:, None, None, None], switched, for_memory)
                    last_applied = jnp.where(applied, index, last_applied)
                cme_logits = jnp.where(ran[:, None], cme_logits, 0.0)
            features = memory.encode_memory(self.sam, feat, for_memory, out["object_score_logits"], False)
            bank = memory.write_tracked(bank, index, features, out["obj_ptr"])
            meta = memory.mark_tracked(meta, index)
            for key, value in (("low_res_masks", out["low_res_masks"][:, 0]), ("obj_ptr", out["obj_ptr"]),
                               ("early_obj_ptr", out["early_obj_ptr"]),
                               ("object_score_logits", out["object_score_logits"][:, 0]), ("masks", masks),
                               ("cme_logits", cme_logits), ("cme_ran", ran), ("cme_labels", labels),
                               ("cme_applied", applied)):
                outputs[key].append(value)
        result = {k: jnp.stack(v, axis=1) for k, v in outputs.items()}
        if not cfg.use_cme_head:
            result = {k: v for k, v in result.items() if not k.startswith("cme")}
        elif train:
            result.pop("cme_applied")
        else:
            result.pop("cme_labels")
        new_state = {"bank": bank, "meta": meta, "last_applied": last_applied,
                     "next_frame": jnp.asarray(start + clip_length, jnp.int32)}
        return result, new_state


def trainable_parameters(model: nnx.Module) -> nnx.State:
    """The parameters SAMWISE trains (adapters, CME, project_text): `nnx.Param`s whose path has a trainable word."""
    return nnx.state(model, nnx.All(nnx.Param, lambda path, _: any(
        word in ".".join(str(p) for p in path) for word in TRAINABLE_WORDS)))
