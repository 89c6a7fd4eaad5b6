"""SAM2 mask decoder (`sam/mask_decoder.py`): two-way transformer over [obj-score, IoU, 4 mask] tokens + prompts.

Masks are upscaled x4 with transposed convs that add the stride-4 and stride-8 features of the image encoder
(`conv_s0`, `conv_s1` are applied to those features in `SAM2.forward_image`). Mask logits are [B, M, 4h, 4w].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import gelu, layer_norm
from models.sam2.layers import MLP, Dtype, conv, conv_transpose_2x2
from models.sam2.transformer import TwoWayTransformer

_HIGHEST = jax.lax.Precision.HIGHEST


class MaskDecoder(nnx.Module):
    """Predicts mask logits, IoU estimates, output tokens and an object-score logit from image + prompt embeddings."""

    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3, *, dynamic_multimask_via_stability: bool = True,
                 stability_delta: float = 0.05, stability_thresh: float = 0.98, attention_impl: str = "auto",
                 dtype: Dtype = None, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        # The official `build_sam2(apply_postprocessing=True)` (the default) turns this on for inference.
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(2, dim, 8, 2048, 2, attention_impl=attention_impl, **kw)

        def tokens(count):
            return nnx.Param(0.02 * jax.random.normal(rngs.params(), (count, dim), param_dtype))

        self.obj_score_token = tokens(1)
        self.iou_token = tokens(1)
        self.mask_tokens = tokens(self.num_mask_tokens)
        # Sequential indices 0 (ConvT), 1 (LayerNorm2d), 3 (ConvT) as in the checkpoint.
        self.output_upscaling = nnx.Dict({
            "0": conv_transpose_2x2(dim, dim // 4, **kw),
            "1": layer_norm(dim // 4, eps=1e-6, **kw),
            "3": conv_transpose_2x2(dim // 4, dim // 8, **kw),
        })
        self.conv_s0 = conv(dim, dim // 8, 1, **kw)
        self.conv_s1 = conv(dim, dim // 4, 1, **kw)
        self.output_hypernetworks_mlps = nnx.List(
            [MLP(dim, dim, dim // 8, 3, **kw) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3, sigmoid_output=True, **kw)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3, **kw)

    def predict_masks(self, image_embeddings: jax.Array, image_pe: jax.Array, sparse: jax.Array, dense: jax.Array,
                      high_res_features: tuple[jax.Array, jax.Array]):
        """All 4 masks: (masks [B, 4, 4h, 4w], iou [B, 4], mask tokens [B, 4, C], object-score logits [B, 1])."""
        batch = sparse.shape[0]
        output_tokens = jnp.concatenate(
            [self.obj_score_token[...], self.iou_token[...], self.mask_tokens[...]], axis=0
        ).astype(sparse.dtype)
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens[None], (batch, *output_tokens.shape)), sparse], 1)
        if image_embeddings.shape[0] != batch:  # one image, several prompts
            image_embeddings = jnp.repeat(image_embeddings, batch, axis=0)
            high_res_features = tuple(jnp.repeat(f, batch, axis=0) for f in high_res_features)
        src = image_embeddings + dense
        pos = jnp.broadcast_to(image_pe, src.shape).astype(src.dtype)
        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2: 2 + self.num_mask_tokens]

        _, height, width, channels = image_embeddings.shape
        src = src.reshape(batch, height, width, channels)
        feat_s0, feat_s1 = high_res_features
        up = self.output_upscaling
        x = gelu(up["1"](up["0"](src) + feat_s1))
        x = gelu(up["3"](x) + feat_s0)
        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )
        masks = jnp.einsum("bmc,bhwc->bmhw", hyper_in, x)
        iou_pred = self.iou_prediction_head(iou_token_out)
        object_score_logits = self.pred_obj_score_head(hs[:, 0])
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def __call__(self, image_embeddings: jax.Array, image_pe: jax.Array, sparse: jax.Array, dense: jax.Array,
                 high_res_features: tuple[jax.Array, jax.Array], multimask_output: bool = True,
                 use_multimask_token_for_obj_ptr: bool = True):
        """-> (masks [B, M, 4h, 4w], iou [B, M], sam tokens [B, M or 1, C], object-score logits [B, 1]).

        M = 3 (tokens 1-3) with `multimask_output`, else 1 (token 0; with `dynamic_multimask_via_stability`, the
        best multimask output replaces it when its stability score is below the threshold).
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse, dense, high_res_features
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability:
            masks, iou_pred = self._dynamic_multimask(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens_out[:, 1:]
        else:
            sam_tokens = mask_tokens_out[:, :1]
        return masks, iou_pred, sam_tokens, object_score_logits

    def _dynamic_multimask(self, masks: jax.Array, iou_pred: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Single-mask output, falling back to the best multimask output when the single mask is unstable."""
        best = jnp.argmax(iou_pred[:, 1:], axis=-1)
        best_masks = jnp.take_along_axis(masks[:, 1:], best[:, None, None, None], axis=1)
        best_iou = jnp.take_along_axis(iou_pred[:, 1:], best[:, None], axis=1)
        single = masks[:, :1]
        flat = single.reshape(single.shape[0], 1, -1).astype(jnp.float32)
        area_inner = jnp.sum(flat > self.stability_delta, axis=-1).astype(jnp.float32)
        area_outer = jnp.sum(flat > -self.stability_delta, axis=-1).astype(jnp.float32)
        stability = jnp.where(area_outer > 0, area_inner / jnp.maximum(area_outer, 1.0), 1.0)
        stable = stability >= self.stability_thresh
        return (jnp.where(stable[:, :, None, None], single, best_masks),
                jnp.where(stable, iou_pred[:, :1], best_iou))
