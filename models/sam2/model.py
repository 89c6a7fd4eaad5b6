"""SAM2 (Segment Anything 2): the assembled model and its registered variants.

`SAM2` holds every module of the official `SAM2Base` under the checkpoint's names (image encoder, prompt encoder,
mask decoder, memory attention, memory encoder, object-pointer heads and the bare embeddings), so an official
`{"model": state_dict}` file maps one-to-one. The image path (`forward_image`, `image_embeddings`, `predict_masks`,
`__call__`) is complete; `forward_sam_heads` adds the tracking outputs (object pointer, best mask) used by video.

Layouts: images [B, H, W, 3] normalised floats (NHWC); feature maps NHWC; mask logits [B, M, h, w] (one plane per
mask, like the official predictor); prompt points (x, y) in pixels of the model's input frame (image_size^2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.sam2.convert import convert_sam2
from models.sam2.hiera import Hiera, HieraConfig
from models.sam2.layers import MLP, Dtype, KeyStream, bilinear_matrix, conv, linear, resize_hw
from models.sam2.mask_decoder import MaskDecoder
from models.sam2.memory import MemoryAttention, MemoryEncoder
from models.sam2.neck import FpnNeck
from models.sam2.prompt_encoder import PromptEncoder
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, register_model

NO_OBJ_SCORE = -1024.0

TRUNKS: dict[str, HieraConfig] = {
    "t": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9)),
    "s": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "b+": HieraConfig(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
                      pos_embed_bkg_size=(14, 14)),
    "l": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                     window_spec=(8, 4, 16, 8)),
}
_FILE_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_URLS = {
    "2.0": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_{}.pt",
    "2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{}.pt",
}


@dataclasses.dataclass(frozen=True)
class SAM2Config:
    """Variant and version of a SAM2 model (the fields of the official yaml that differ between variants)."""

    variant: str = "t"
    version: str = "2.0"
    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    # Official inference default (`build_sam2(apply_postprocessing=True)`): an unstable single mask falls back to the
    # best of the three multimask outputs.
    dynamic_multimask_via_stability: bool = True

    @property
    def name(self) -> str:
        """The registry name, e.g. `sam2_hiera_t` or `sam2.1_hiera_b+`."""
        return f"sam{'2' if self.version == '2.0' else '2.1'}_hiera_{self.variant}"

    @property
    def trunk(self) -> HieraConfig:
        """The Hiera configuration of the variant."""
        return TRUNKS[self.variant]

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 image embedding (64 at 1024)."""
        return self.image_size // self.backbone_stride


class ImageEncoder(nnx.Module):
    """Hiera trunk + FPN neck; `scalp=1` drops the lowest-resolution level."""

    def __init__(self, trunk: HieraConfig, d_model: int = 256, *, attention_impl: str, dtype: Dtype,
                 param_dtype: Dtype, rngs: nnx.Rngs):
        self.trunk = Hiera(trunk, attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.neck = FpnNeck(trunk.channels, d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.scalp = 1

    def __call__(self, images: jax.Array) -> dict[str, Any]:
        features, positions = self.neck(self.trunk(images))
        features, positions = features[: -self.scalp], positions[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": positions, "backbone_fpn": features}


class SAM2(nnx.Module):
    """Segment Anything 2 with every official parameter; see the module docstring for layouts."""

    def __init__(self, config: SAM2Config, *, attention_impl: str = "auto", dtype: Dtype = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        if config.variant not in TRUNKS:
            raise ValueError(f"unknown SAM2 variant {config.variant!r}; expected one of {sorted(TRUNKS)}")
        if config.version not in ("2.0", "2.1"):
            raise ValueError(f"SAM2 version must be '2.0' or '2.1'; got {config.version!r}")
        if config.image_size % 32 or (config.image_size // 4) % config.trunk.window_spec[0]:
            raise ValueError(
                f"image_size {config.image_size} must be a multiple of 32 whose stride-4 map tiles the "
                f"{config.trunk.window_spec[0]}x{config.trunk.window_spec[0]} window position embedding"
            )
        rngs = KeyStream(rngs.params())  # see KeyStream: linear-time abstract construction
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.config = config
        self.dtype = dtype
        hidden, mem = config.hidden_dim, config.mem_dim
        self.image_encoder = ImageEncoder(config.trunk, hidden, attention_impl=attention_impl, **kw)
        side = config.embedding_size
        self.sam_prompt_encoder = PromptEncoder(hidden, (side, side), (config.image_size, config.image_size), 16,
                                                **kw)
        self.sam_mask_decoder = MaskDecoder(hidden, 3, attention_impl=attention_impl,
                                            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability, **kw)
        self.memory_attention = MemoryAttention(hidden, mem, 4, attention_impl=attention_impl, **kw)
        self.memory_encoder = MemoryEncoder(hidden, mem, **kw)
        self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3, **kw)
        self.mask_downsample = conv(1, 1, 4, stride=4, **kw)

        def normal(shape):
            return nnx.Param(0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, param_dtype))

        self.maskmem_tpos_enc = normal((config.num_maskmem, 1, 1, mem))
        self.no_mem_embed = normal((1, 1, hidden))
        self.no_mem_pos_enc = normal((1, 1, hidden))
        self.no_obj_ptr = normal((1, hidden))
        if config.version == "2.1":
            self.no_obj_embed_spatial = normal((1, mem))
            self.obj_ptr_tpos_proj = linear(hidden, mem, **kw)
        else:
            self.no_obj_embed_spatial = None
            self.obj_ptr_tpos_proj = None

    # ---------------------------------------------------------------------------------------------------------------
    # Image path
    # ---------------------------------------------------------------------------------------------------------------

    def forward_image(self, images: jax.Array) -> dict[str, Any]:
        """Image encoder output; the two high-resolution FPN levels already go through `conv_s0` / `conv_s1`.

        Returns {"backbone_fpn": [s4 [B,H/4,W/4,32], s8 [B,H/8,W/8,64], s16 [B,H/16,W/16,256]],
        "vision_pos_enc": [three 256-channel sine encodings], "vision_features": s16}.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"SAM2 expects normalised NHWC images [B, H, W, 3]; got shape {images.shape}")
        size = self.config.image_size
        if images.shape[1:3] != (size, size):
            raise ValueError(f"SAM2 was built for {size}x{size} inputs; got {images.shape[1:3]}")
        if self.dtype is not None:
            images = images.astype(self.dtype)
        out = self.image_encoder(images)
        fpn = list(out["backbone_fpn"])
        fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
        fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return dict(out, backbone_fpn=fpn)

    def forward_features(self, images: jax.Array) -> dict[str, Any]:
        """Backbone convention of the zoo: the same as `forward_image`."""
        return self.forward_image(images)

    def image_embeddings(self, images: jax.Array) -> dict[str, Any]:
        """What the image predictor caches: {"image_embed": s16 + no_mem_embed, "high_res_feats": [s4, s8]}."""
        fpn = self.forward_image(images)["backbone_fpn"]
        embed = fpn[2] + self.no_mem_embed[...].astype(fpn[2].dtype)
        return {"image_embed": embed, "high_res_feats": fpn[:2]}

    def predict_masks(self, features: dict[str, Any], point_coords: jax.Array | None = None,
                      point_labels: jax.Array | None = None, boxes: jax.Array | None = None,
                      mask_input: jax.Array | None = None, multimask_output: bool = True):
        """Prompted decoding on cached `image_embeddings` (the official `SAM2ImagePredictor._predict`).

        point_coords [B, N, 2] and point_labels [B, N] in input-frame pixels; boxes [B, 4] (x0, y0, x1, y1), encoded
        as two corner points placed before the clicks; mask_input [B, 1, 4h, 4w] logits. One image with B prompt
        sets decodes B objects. Returns (low-res mask logits [B, M, 4h, 4w], IoU [B, M], object-score logits [B, 1]).
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            points = (jnp.asarray(point_coords, jnp.float32), jnp.asarray(point_labels, jnp.int32))
        if boxes is not None:
            corners = jnp.asarray(boxes, jnp.float32).reshape(-1, 2, 2)
            corner_labels = jnp.broadcast_to(jnp.asarray([[2, 3]], jnp.int32), corners.shape[:2])
            if points is not None:
                points = (jnp.concatenate([corners, points[0]], 1), jnp.concatenate([corner_labels, points[1]], 1))
            else:
                points = (corners, corner_labels)
        sparse, dense = self.sam_prompt_encoder(points, None, mask_input)
        masks, iou, _, object_score_logits = self.sam_mask_decoder(
            features["image_embed"], self.sam_prompt_encoder.dense_pe(), sparse, dense,
            tuple(features["high_res_feats"]), multimask_output=multimask_output,
        )
        return masks.astype(jnp.float32), iou.astype(jnp.float32), object_score_logits.astype(jnp.float32)

    def __call__(self, images: jax.Array, point_coords: jax.Array | None = None,
                 point_labels: jax.Array | None = None, boxes: jax.Array | None = None,
                 mask_input: jax.Array | None = None, multimask_output: bool = True) -> dict[str, jax.Array]:
        """Encode `images` [B, H, W, 3] and decode one prompt set per image; see `predict_masks`."""
        features = self.image_embeddings(images)
        masks, iou, object_score_logits = self.predict_masks(
            features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        return {"low_res_masks": masks, "iou_scores": iou, "object_score_logits": object_score_logits}

    # ---------------------------------------------------------------------------------------------------------------
    # Tracking heads (`SAM2Base._forward_sam_heads`)
    # ---------------------------------------------------------------------------------------------------------------

    def forward_sam_heads(self, backbone_features: jax.Array, point_coords: jax.Array | None = None,
                          point_labels: jax.Array | None = None, mask_inputs: jax.Array | None = None,
                          high_res_features: tuple[jax.Array, jax.Array] | None = None,
                          multimask_output: bool = False, *,
                          multimask_per_example: jax.Array | None = None) -> dict[str, jax.Array]:
        """SAM heads as used for tracking: masks gated by the object score, best mask and the object pointer.

        backbone_features [B, h, w, 256] (memory-conditioned); mask_inputs [B, 1, H, W] (other sizes than 4h x 4w
        are resized like the official code). Returns
        low/high-res multimasks, ious, best low/high-res masks, obj_ptr [B, 256] and object_score_logits [B, 1].

        `multimask_per_example` [B] bool selects the training form (`SAM2Train`, traced in the multi-frame loss):
        `multimask_output` is then ignored, the multimask choice is made per example (the best of tokens 1-3 by
        predicted IoU where True, token 0 where False) with no dynamic-stability fallback, "low_res_multimasks",
        "high_res_multimasks" and "ious" hold all four decoder outputs (token 0 first) for the loss, and ious,
        object_score_logits and obj_ptr are float32.
        """
        batch = backbone_features.shape[0]
        if point_coords is None:
            point_coords = jnp.zeros((batch, 1, 2), jnp.float32)
            point_labels = -jnp.ones((batch, 1), jnp.int32)
        if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != self.sam_prompt_encoder.mask_input_size:
            # The official code downsamples other mask sizes with antialiased bilinear interpolation.
            mask_inputs = resize_hw(mask_inputs.astype(jnp.float32), self.sam_prompt_encoder.mask_input_size,
                                    lambda a, b: bilinear_matrix(a, b, True), axes=(2, 3))
        sparse, dense = self.sam_prompt_encoder((point_coords, point_labels), None, mask_inputs)
        training = multimask_per_example is not None
        if training:  # all four outputs, no selection inside the decoder (and so no stability fallback)
            masks, ious, sam_tokens, object_score_logits = self.sam_mask_decoder.predict_masks(
                backbone_features, self.sam_prompt_encoder.dense_pe(), sparse, dense, tuple(high_res_features))
            ious, object_score_logits = ious.astype(jnp.float32), object_score_logits.astype(jnp.float32)
        else:
            masks, ious, sam_tokens, object_score_logits = self.sam_mask_decoder(
                backbone_features, self.sam_prompt_encoder.dense_pe(), sparse, dense, tuple(high_res_features),
                multimask_output=multimask_output,
            )
        is_object = object_score_logits > 0
        low_res = jnp.where(is_object[:, :, None, None], masks.astype(jnp.float32), NO_OBJ_SCORE)
        size = self.config.image_size
        high_res = resize_hw(low_res, (size, size), bilinear_matrix, axes=(2, 3))
        token = sam_tokens[:, 0]
        if training:
            best = jnp.where(multimask_per_example, jnp.argmax(ious[:, 1:], axis=-1) + 1, 0)
            low_best = jnp.take_along_axis(low_res, best[:, None, None, None], axis=1)
            high_best = jnp.take_along_axis(high_res, best[:, None, None, None], axis=1)
            token = jnp.take_along_axis(sam_tokens, best[:, None, None], axis=1)[:, 0]
        elif multimask_output:
            best = jnp.argmax(ious, axis=-1)
            take = jax.vmap(lambda x, i: x[i])
            low_best, high_best = take(low_res, best)[:, None], take(high_res, best)[:, None]
            if sam_tokens.shape[1] > 1:
                token = take(sam_tokens, best)
        else:
            low_best, high_best = low_res, high_res
        obj_ptr = self.obj_ptr_proj(token)
        if training:  # the memory bank keeps pointers in float32
            obj_ptr = obj_ptr.astype(jnp.float32)
        appearing = is_object.astype(obj_ptr.dtype)
        obj_ptr = appearing * obj_ptr + (1 - appearing) * self.no_obj_ptr[...].astype(obj_ptr.dtype)
        return {
            "low_res_multimasks": low_res, "high_res_multimasks": high_res, "ious": ious,
            "low_res_masks": low_best, "high_res_masks": high_best, "obj_ptr": obj_ptr,
            "object_score_logits": object_score_logits,
        }


    # ---------------------------------------------------------------------------------------------------------------
    # Layer-wise learning-rate decay
    # ---------------------------------------------------------------------------------------------------------------

    def max_layer_id(self) -> int:
        """The layer id of everything outside the Hiera blocks: number of trunk blocks + 1."""
        return len(self.image_encoder.trunk.blocks) + 1

    def layer_id(self, path: str) -> int:
        """Layer-wise LR decay id of the parameter at a dotted NNX `path` relative to the model.

        e.g. "image_encoder.trunk.blocks.3.attn.qkv.kernel" -> 4.

        The official training code's rule (`layer_decay_param_modifier` with `apply_to="image_encoder.trunk"` and
        Hiera's `get_layer_id`, after BEiT): the trunk's patch embedding and position embeddings 0, trunk block i
        -> i + 1, everything else (neck, prompt encoder, mask decoder, memory modules, bare embeddings)
        `max_layer_id()`, so a decay rate d scales block i's LR by d ** (max_layer_id() - i - 1).
        """
        parts = path.split(".")
        if parts[:2] != ["image_encoder", "trunk"] or len(parts) < 3:
            return self.max_layer_id()
        if parts[2] in ("patch_embed", "pos_embed", "pos_embed_window"):
            return 0
        if parts[2] == "blocks" and len(parts) > 3:
            return int(parts[3]) + 1
        return self.max_layer_id()


# --------------------------------------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------------------------------------


def build_sam2(variant: str, version: str, *, rngs: nnx.Rngs, image_size: int = 1024, attention_impl: str = "auto",
               dtype: Dtype = None, param_dtype: Dtype = jnp.float32,
               dynamic_multimask_via_stability: bool = True) -> SAM2:
    """Build a SAM2 model; `image_size` other than 1024 is supported (multiples of 32, e.g. 512 for fast tests)."""
    config = SAM2Config(variant=variant, version=version, image_size=image_size,
                        dynamic_multimask_via_stability=dynamic_multimask_via_stability)
    return SAM2(config, attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _register(variant: str, version: str) -> None:
    name = SAM2Config(variant=variant, version=version).name
    cfg = PretrainedCfg(
        input_size=(1024, 1024, 3), interpolation="bilinear", crop_pct=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=0, url=_URLS[version].format(_FILE_NAMES[variant]),
        file_url=_URLS[version].format(_FILE_NAMES[variant]), license="Apache-2.0",
        paper="SAM 2: Segment Anything in Images and Videos (arXiv:2408.00714)",
    )

    def builder(*, rngs: nnx.Rngs, **overrides: Any) -> SAM2:
        return build_sam2(variant, version, rngs=rngs, **overrides)

    builder.__name__ = builder.__qualname__ = name.replace(".", "_").replace("+", "_plus")
    builder.__doc__ = f"SAM {version} with the Hiera-{variant} trunk; overrides: image_size, dtype, attention_impl."
    register_model(name, cfg=cfg, converter=convert_sam2)(builder)


for _version in ("2.0", "2.1"):
    for _variant in TRUNKS:
        _register(_variant, _version)
