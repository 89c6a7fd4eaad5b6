"""MaskAlign (Xue et al., CVPR 2023, "Stare at What You See: Masked Image Modeling without Reconstruction").

A student ViT sees only the visible patches (attention-guided or random masking); a frozen teacher sees the whole
image. The student's block outputs are mixed by Dynamic Alignment (a learnable matrix over layers), mapped by one
head per teacher layer, and regressed onto the teacher's (whitened) features at the class token and the visible
positions. There is no mask token, no decoder and no pixel target.

`MaskAlign.__call__(images, mask_key=None, ids_keep=None)` draws the mask from `mask_key`, or from the model's own
"mask" stream when none is given (a fresh mask per call: the trainer's step), or takes it fixed (`ids_keep`); it
returns a `MaskAlignOutput` with the scalar loss, the per-layer loss terms and the ids kept. Parameter paths: `student.*` (timm ViT names), `distill_heads.N.*`, `distill_weights` and the
frozen `teacher.*`, whose parameters a task freezes (`optimizer.frozen = ("teacher\\..*",)`); the forward already
stops their gradient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import check_image_input, gelu, layer_norm, layer_norm_fn
from models.maskalign.masking import attention_keep_ids, num_keep, random_keep_ids
from models.maskalign.student import MaskAlignStudent, check_keep_ids, gather_tokens, xavier_uniform

MASK_TYPES = ("attention", "random")
FUSION_TYPES = ("simple", "linear", "sum")
TARGET_NORMS = ("none", "l2", "whiten", "bn")
LOSS_TYPES = ("l2", "l1", "smoothl1")
HEAD_TYPES = ("linear", "norm_linear", "mlp", "mlp2")


def _choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def loss_weight_list(loss_weights: str, num_layers: int) -> list[float]:
    """The official per-teacher-layer weights: "mean" (1/n each), "out" (last layer only), "linear_decay"
    (i / sum(0..n-1), growing with depth), "topK" (1/K on the last K layers), "midK" (1 on layer K, 0-based)."""
    if loss_weights == "mean":
        return [1.0 / num_layers] * num_layers
    if loss_weights == "out":
        return [0.0] * (num_layers - 1) + [1.0]
    if loss_weights == "linear_decay":
        if num_layers < 2:
            raise ValueError("loss_weights='linear_decay' needs at least 2 teacher layers (the weights are i / sum(i))")
        total = sum(range(num_layers))
        return [i / total for i in range(num_layers)]
    match = re.fullmatch(r"(top|mid)(\d+)", loss_weights)
    if match is None:
        raise ValueError(f"loss_weights must be 'mean', 'out', 'linear_decay', 'top<K>' or 'mid<K>'; got {loss_weights!r}")
    k = int(match.group(2))
    if match.group(1) == "top":
        if not 1 <= k <= num_layers:
            raise ValueError(f"loss_weights={loss_weights!r}: K must be in 1..{num_layers} (the teacher's depth)")
        return [0.0] * (num_layers - k) + [1.0 / k] * k
    if not 0 <= k < num_layers:
        raise ValueError(f"loss_weights={loss_weights!r}: K must be in 0..{num_layers - 1} (a 0-based teacher layer)")
    return [0.0] * k + [1.0] + [0.0] * (num_layers - k - 1)


def normalize_target(y: jax.Array, target_norm: str) -> jax.Array:
    """The official `target_norm` of one teacher layer [B, N, C] (float32): "whiten" = LayerNorm without affine,
    eps 1e-5 (`F.layer_norm`); "l2" = y / max(|y|, 1e-12) per token (`F.normalize`); "bn" = (y - mean) /
    sqrt(var + 1e-6) over the whole tensor, unbiased variance (torch `var()`); "none"."""
    y = y.astype(jnp.float32)
    if target_norm == "whiten":
        return layer_norm_fn(y, None, None, 1e-5)
    if target_norm == "l2":
        return y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    if target_norm == "bn":
        return (y - y.mean()) / jnp.sqrt(jnp.var(y, ddof=1) + 1e-6)
    return y


def teacher_targets(hidden_states: Sequence[jax.Array], ids_keep: jax.Array, target_norm: str) -> list[jax.Array]:
    """Targets of the official `get_teacher`: layers 1..depth (the embedding output is skipped), normalised over all
    tokens, then the class token and the visible patches `ids_keep`: each [B, 1 + K, C] float32."""
    targets = []
    for y in hidden_states[1:]:
        y = normalize_target(y, target_norm)
        targets.append(jnp.concatenate([y[:, :1], gather_tokens(y[:, 1:], ids_keep)], axis=1))
    return targets


def layer_loss(pred: jax.Array, target: jax.Array, loss_type: str) -> jax.Array:
    """Mean over tokens and channels (float32): "l2" squared error, "l1", "smoothl1" = 2 x smooth-L1 with beta 1
    (the official `2 * F.smooth_l1_loss(target, pred)`)."""
    diff = target.astype(jnp.float32) - pred.astype(jnp.float32)
    if loss_type == "l2":
        return jnp.mean(diff * diff)
    abs_diff = jnp.abs(diff)
    if loss_type == "l1":
        return jnp.mean(abs_diff)
    return 2.0 * jnp.mean(jnp.where(abs_diff < 1.0, 0.5 * diff * diff, abs_diff - 0.5))


class DistillHead(nnx.Module):
    """One alignment head (official `distill_heads[i]`): student width -> teacher width.

    linear: `fc`; norm_linear: `norm` -> `fc`; mlp: `fc1` -> GELU -> `fc`; mlp2: `fc1` -> `norm` -> `fc`. The norms are
    the student's (LayerNorm eps 1e-6); Linear init xavier uniform with zero bias. The converter maps the official
    `distill_heads.N` / `distill_heads.N.{0,1,2}` keys onto these names.
    """

    def __init__(self, head_type: str, in_dim: int, out_dim: int, *, norm_eps: float = 1e-6, dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.head_type = _choice("head_type", head_type, HEAD_TYPES)
        common = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        linear = {"kernel_init": xavier_uniform, **common}
        self.fc1 = nnx.Linear(in_dim, in_dim, **linear) if head_type in ("mlp", "mlp2") else None
        self.norm = layer_norm(in_dim, eps=norm_eps, **common) if head_type in ("norm_linear", "mlp2") else None
        self.fc = nnx.Linear(in_dim, out_dim, **linear)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.fc1 is not None:
            x = self.fc1(x)
            if self.head_type == "mlp":
                x = gelu(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(x)


class MaskAlignOutput(NamedTuple):
    """`loss`: the weighted scalar; `layer_losses`: [teacher depth] unweighted per-layer terms (float32, for logging;
    the loss only sums those of positive weight); `ids_keep`: [B, K] visible patches; `cls_attention`: [B, L] the
    teacher's CLS attention (the masking importance)."""

    loss: jax.Array
    layer_losses: jax.Array
    ids_keep: jax.Array
    cls_attention: jax.Array


class MaskAlign(nnx.Module):
    """Student + Dynamic Alignment + heads + frozen teacher, with the official options.

    Args:
      teacher: a teacher adapter (`ClipTeacher` / `VitTeacher`, or any module with `depth`, `width`, `num_patches`
        and `__call__(images) -> TeacherOutput`); its patch grid must be the student's.
      img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, norm_eps, drop_path_rate: the student.
      mask_ratio: fraction of patches hidden from the student (README 0.7; the official argument default 0.75).
      mask_type: "attention" (patches kept with probability proportional to the teacher's CLS attention) | "random".
      fusion_type: Dynamic Alignment: "linear" (learnable W = eye(n) + 0.01, student depth == teacher depth) | "sum"
        (W = ones(n_teacher, n_student) / n_student, any depths) | "simple" (no mixing, equal depths).
      target_norm: "whiten" | "l2" | "bn" | "none" (see `normalize_target`).
      loss_type: "smoothl1" | "l2" | "l1"; loss_weights: "top5", "mean", "out", "linear_decay", "midK" ...
      head_type: "linear" | "norm_linear" | "mlp" | "mlp2".
      attention_impl, dtype, param_dtype, rngs: as every zoo model (the loss is computed in float32).
    """

    def __init__(
        self, *, teacher: nnx.Module, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
        embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0, mask_ratio: float = 0.7, mask_type: str = "attention",
        fusion_type: str = "linear", target_norm: str = "whiten", loss_type: str = "smoothl1",
        loss_weights: str = "top5", head_type: str = "linear", attention_impl: str = "auto", dtype: Any = None,
        param_dtype: Any = jnp.float32, rngs: nnx.Rngs,
    ):
        self.mask_type = _choice("mask_type", mask_type, MASK_TYPES)
        self.fusion_type = _choice("fusion_type", fusion_type, FUSION_TYPES)
        self.target_norm = _choice("target_norm", target_norm, TARGET_NORMS)
        self.loss_type = _choice("loss_type", loss_type, LOSS_TYPES)
        self.head_type = _choice("head_type", head_type, HEAD_TYPES)
        teacher_depth = int(teacher.depth)
        if fusion_type in ("linear", "simple") and depth != teacher_depth:
            raise ValueError(
                f"fusion_type={fusion_type!r} aligns student block i with teacher layer i and needs equal depths; the "
                f"student has {depth} blocks, the teacher {teacher_depth} layers: use fusion_type='sum' (the official "
                "choice for ViT-L/16 with a CLIP-B/16 teacher)"
            )
        self.loss_weights = loss_weights
        self.weights = tuple(loss_weight_list(loss_weights, teacher_depth))
        self.student = MaskAlignStudent(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps, drop_path_rate=drop_path_rate,
            attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        if teacher.num_patches != self.student.num_patches:
            raise ValueError(
                f"the teacher sees {teacher.num_patches} patches (grid {teacher.grid_size}), the student "
                f"{self.student.num_patches} (grid {self.student.grid_size}): the targets are gathered at the "
                "student's visible positions, so the grids must match (run CLIP-L/14 at img_size=196 for a /16 "
                "student at 224)"
            )
        self.mask_ratio = float(mask_ratio)
        self.num_keep = num_keep(self.student.num_patches, self.mask_ratio)
        self.teacher = teacher
        self.teacher_depth = teacher_depth
        self.distill_heads = nnx.List([
            DistillHead(head_type, embed_dim, teacher.width, norm_eps=norm_eps, dtype=dtype, param_dtype=param_dtype,
                        rngs=rngs)
            for _ in range(teacher_depth)
        ])
        if fusion_type == "linear":
            self.distill_weights = nnx.Param(jnp.eye(depth, dtype=param_dtype) + 0.01)
        elif fusion_type == "sum":
            self.distill_weights = nnx.Param(jnp.full((teacher_depth, depth), 1.0 / depth, param_dtype))
        else:
            self.distill_weights = None
        # The masking's own random stream (last, so it leaves the parameter init above unchanged): drawn when the
        # call passes no mask_key, so a training step draws a fresh mask inside the jitted step (the stream's count
        # is model state, carried by the trainer like the drop-path streams).
        self.mask_rngs = nnx.Rngs(mask=rngs.params())

    # --- layer-wise LR decay (fine-tuning recipes; pre-training uses none) ------------------------------------------
    def max_layer_id(self) -> int:
        """The student's `max_layer_id()`: heads, DA weights and the (frozen) teacher share it."""
        return self.student.max_layer_id()

    def layer_id(self, path: str) -> int:
        """`student.<p>` -> the student's `layer_id(p)`; everything else (heads, distill_weights, teacher) ->
        `max_layer_id()`."""
        head, _, rest = path.partition(".")
        return self.student.layer_id(rest) if head == "student" else self.max_layer_id()

    # --- the pieces of the forward ----------------------------------------------------------------------------------
    def keep_ids(self, importance: jax.Array, mask_key: jax.Array | None) -> jax.Array:
        """[B, K] visible patches from `mask_key` (attention masking draws with the teacher's `importance`); without
        a key, from the model's own "mask" stream (a fresh draw per call)."""
        if mask_key is None:
            mask_key = self.mask_rngs.mask()
        if self.mask_type == "attention":
            return attention_keep_ids(mask_key, importance, self.num_keep)
        return random_keep_ids(mask_key, importance.shape[0], self.student.num_patches, self.num_keep)

    def align(self, student_hidden: Sequence[jax.Array]) -> list[jax.Array]:
        """Dynamic Alignment (`einsum('ab,bcde->acde', W, S)` over the stacked block outputs) and the heads: one
        prediction per teacher layer, [B, 1 + K, C_teacher]."""
        mixed = list(student_hidden)
        if self.distill_weights is not None:
            stacked = jnp.stack(mixed, axis=0)
            weights = self.distill_weights[...].astype(stacked.dtype)
            fused = jnp.einsum("ab,bcde->acde", weights, stacked)
            mixed = [fused[i] for i in range(fused.shape[0])]
        return [head(x) for head, x in zip(self.distill_heads, mixed, strict=True)]

    def losses(self, predictions: Sequence[jax.Array], targets: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(weighted scalar loss, [depth] per-layer terms); layers of weight 0 are left out of the sum, as the
        official `if weight_list[i] > 0`, so their heads get no gradient."""
        terms = [layer_loss(p, t, self.loss_type) for p, t in zip(predictions, targets, strict=True)]
        loss = jnp.zeros((), jnp.float32)
        for weight, term in zip(self.weights, terms, strict=True):
            if weight > 0:
                loss = loss + weight * term
        return loss, jnp.stack(terms)

    def forward(self, images: jax.Array, *, mask_key: jax.Array | None = None, ids_keep: jax.Array | None = None,
                train: bool = False, rngs=None) -> tuple[list[jax.Array], list[jax.Array], jax.Array, jax.Array]:
        """(predictions, targets, ids_keep, cls_attention): the pieces `__call__` reduces to the loss (one entry per
        teacher layer, [B, 1 + K, C_teacher] each); a caller weighting examples (a masked eval) reduces them itself."""
        student = self.student
        check_image_input(images, img_size=student.img_size, in_chans=student.in_chans, model="MaskAlign")
        teacher_out = self.teacher(images)
        if ids_keep is None:
            ids_keep = self.keep_ids(teacher_out.cls_attention, mask_key)
        else:
            check_keep_ids(ids_keep, batch=images.shape[0], num_patches=self.student.num_patches,
                           num_keep=self.num_keep)
            ids_keep = ids_keep.astype(jnp.int32)
        student_hidden = self.student(images, ids_keep, train=train, rngs=rngs)
        predictions = self.align(student_hidden)
        targets = teacher_targets(teacher_out.hidden_states, ids_keep, self.target_norm)
        return predictions, targets, ids_keep, teacher_out.cls_attention

    def __call__(self, images: jax.Array, *, mask_key: jax.Array | None = None, ids_keep: jax.Array | None = None,
                 train: bool = False, rngs=None) -> MaskAlignOutput:
        """The pre-training loss of an ImageNet-normalised NHWC batch.

        `mask_key` draws the mask (`mask_type`; default: the model's "mask" stream, a new mask per call, as a training
        step wants); `ids_keep` [B, K] fixes it instead (parity tests, visualisation).
        `train=True` turns on the student's drop path (random numbers from the model's "dropout" stream or `rngs`).
        """
        predictions, targets, ids_keep, cls_attention = self.forward(images, mask_key=mask_key, ids_keep=ids_keep,
                                                                     train=train, rngs=rngs)
        loss, terms = self.losses(predictions, targets)
        return MaskAlignOutput(loss, terms, ids_keep, cls_attention)
