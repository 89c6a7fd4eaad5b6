"""The ILA module (`message_attn`): interactive block, point prediction, alignment masks, aligned and interactive
features (the official `models/align.py:ILA`), on (batch, frames, tokens, width) inputs.

Shapes: B videos, T frames, P = T - 1 adjacent pairs (frame t, frame t + 1), an H x W patch grid, D the tower width,
C the interactive width (256 officially; `hidden` here). Every conv runs NHWC (NDHWC for the 3-D one).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import TorchBatchNorm

# The nine jitter directions of the training-time alignment mask, (x, y): centre, the four axes, the four diagonals.
JITTER_OFFSETS = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
JITTER_DELTA = 0.2  # the jitter step at epoch 0
JITTER_DECAY_START = 30  # `main.py` halves the step at the start of every epoch from 30 on
POINT_SCALE = 0.75  # tanh output * 0.75: points stay inside [-0.75, 0.75]
INTERACTIVE_FORMS = ("separable", "full")  # K400 (branch master) and SSv2 (branch SSV2)


def jitter_delta(epoch: int | jax.Array | None, *, delta: float = JITTER_DELTA,
                 decay_start: int = JITTER_DECAY_START) -> float | jax.Array:
    """The jitter step of the training-time alignment mask at 0-based `epoch` (None: epoch 0).

    The official `align_decay()` halves a non-saved buffer once at the start of each epoch >= 30, so epoch e trains
    with delta * 0.5 ** max(0, e - 29). `epoch` may be a traced integer (exact: a power-of-two scale via ldexp).
    """
    if epoch is None:
        return delta
    if isinstance(epoch, int):
        return delta * 0.5 ** max(0, epoch - decay_start + 1)
    halvings = jnp.maximum(0, jnp.asarray(epoch, jnp.int32) - (decay_start - 1))
    return jnp.ldexp(jnp.float32(delta), -halvings)


def alignment_mask(points_xy: jax.Array, size: int) -> jax.Array:
    """Piecewise-linear alignment mask(s) around normalised points: (..., 2) (x, y) in [-1, 1] -> (..., size, size).

    Per axis, with the grid g = linspace(-1, 1, size) and d = g - p: 1 where |d| <= 0.25, else
    max(0, 1 - 1.5 (|d| - 0.25)); the mask is the outer product mask[h, w] = profile_y[h] * profile_x[w].
    """
    grid = jnp.arange(size, dtype=jnp.float32) / (size - 1) * 2 - 1
    d = grid[:, None] - points_xy[..., None, :].astype(jnp.float32)  # (..., size, 2)
    inside = (d >= -0.25) & (d <= 0.25)
    ramp = jax.nn.relu(1 - (jnp.abs(d) - 0.25) * 1.5)
    profile = jnp.where(inside, 1.0, ramp)
    return profile[..., :, None, 1] * profile[..., None, :, 0]


def jittered_alignment_mask(points_xy: jax.Array, size: int, delta: float | jax.Array | None) -> jax.Array:
    """`alignment_mask` averaged over the nine `JITTER_OFFSETS` * delta (training), or without jitter (None)."""
    if delta is None:
        return alignment_mask(points_xy, size)
    offsets = jnp.asarray(JITTER_OFFSETS, jnp.float32) * jnp.asarray(delta, jnp.float32)
    masks = alignment_mask(points_xy[..., None, :] + offsets, size)  # (..., 9, size, size)
    return masks.mean(axis=-3)


def merge_pairs(pre: jax.Array, cur: jax.Array) -> jax.Array:
    """Per-frame merge of pair features (B, P, ...) -> (B, P + 1, ...): frame 0 <- pre of pair 0, the last frame <- cur
    of the last pair, frame t in between <- the mean of pre of pair t and cur of pair t - 1."""
    middle = (pre[:, 1:] + cur[:, :-1]) / 2
    return jnp.concatenate([pre[:, :1], middle, cur[:, -1:]], axis=1)


def depthwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, *, dtype: Any = None) -> jax.Array:
    """A depthwise k x k convolution ('same' zero padding, stride 1, cross-correlation as torch / `nnx.Conv`) of
    x (N, H, W, C) with an `nnx.Conv` kernel (k, k, 1, C): the sum of k*k shifted, per-channel-scaled copies.

    Equal to `nnx.Conv(feature_group_count=C)`, but its gradients are elementwise: XLA's CPU backward of a grouped
    convolution is far slower (0.44 s vs 0.02 s in torch for ILA-B/16's weight gradient).
    """
    dtype = dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    k = kernel.shape[0]
    pad = k // 2
    height, width = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            term = padded[:, i:i + height, j:j + width, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out if bias is None else out + bias.astype(dtype)


class ConvBN(nnx.Module):
    """Conv (with bias, 'same' padding) -> BatchNorm -> optional max pool 2 -> ReLU: one stage of the official
    `nn.Sequential`s (`conv`, `bn`)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, *, groups: int = 1, pool: bool = False,
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        pad = kernel_size // 2
        self.pool = pool
        self.conv = nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)),
                             feature_group_count=groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn = TorchBatchNorm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def _conv(self, x: jax.Array) -> jax.Array:
        conv = self.conv
        if conv.feature_group_count > 1 and conv.feature_group_count == conv.in_features == conv.out_features:
            return depthwise_conv(x, conv.kernel[...], conv.bias[...], dtype=conv.dtype)
        return conv(x)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = self.bn(self._conv(x), train=train)
        if self.pool:  # MaxPool2d(2): floor, as torch
            x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return jax.nn.relu(x)


class InteractiveBlock(nnx.Module):
    """Pair (2D channels) -> the C-channel interactive map.

    "separable" (K400, branch master): depthwise 3x3 (+BN, ReLU) -> pointwise 1x1 to C (+BN, ReLU) -> 3x3 C -> C
    (+BN, ReLU). "full" (SSv2, branch SSV2): 3x3 2D -> C (+BN, ReLU) -> 3x3 C -> C (+BN, ReLU).
    """

    def __init__(self, in_features: int, hidden: int, *, form: str = "separable", rngs: nnx.Rngs, **common: Any):
        if form not in INTERACTIVE_FORMS:
            raise ValueError(f"interactive_form must be one of {INTERACTIVE_FORMS} (K400 / SSv2); got {form!r}")
        self.form = form
        if form == "separable":
            stages = [ConvBN(in_features, in_features, 3, groups=in_features, rngs=rngs, **common),
                      ConvBN(in_features, hidden, 1, rngs=rngs, **common),
                      ConvBN(hidden, hidden, 3, rngs=rngs, **common)]
        else:
            stages = [ConvBN(in_features, hidden, 3, rngs=rngs, **common), ConvBN(hidden, hidden, 3, rngs=rngs, **common)]
        self.layers = nnx.List(stages)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for stage in self.layers:
            x = stage(x, train=train)
        return x


class PredictionBlock(nnx.Module):
    """Interactive map (N = B P, H, W, C) -> points (B, P, 4) in [-0.75, 0.75]: two ConvBN stages with max pool 2, a
    global max pool, then two grouped (2 groups) k=1 Conv1d over the pairs, ReLU between, tanh, * 0.75.

    Points [..., :2] are (x, y) in the earlier frame of a pair, [..., 2:] in the later one; with 2 groups each point
    sees only its half of the channels. The last Conv1d starts at zero, so the initial points are the centre.
    """

    def __init__(self, hidden: int, *, rngs: nnx.Rngs, **common: Any):
        half, quarter = hidden // 2, hidden // 4
        self.conv1 = ConvBN(hidden, half, 3, pool=True, rngs=rngs, **common)
        self.conv2 = ConvBN(half, half, 3, pool=True, rngs=rngs, **common)
        self.fc1 = nnx.Conv(half, quarter, (1,), feature_group_count=2, rngs=rngs, **common)
        self.fc2 = nnx.Conv(quarter, 4, (1,), feature_group_count=2, kernel_init=nnx.initializers.zeros,
                            bias_init=nnx.initializers.zeros, rngs=rngs, **common)

    def __call__(self, x: jax.Array, num_pairs: int, *, train: bool = False) -> jax.Array:
        x = self.conv2(self.conv1(x, train=train), train=train)
        x = x.max(axis=(1, 2)).reshape(-1, num_pairs, x.shape[-1])  # AdaptiveMaxPool2d(1), then (B, P, C/2)
        x = self.fc2(jax.nn.relu(self.fc1(x)))
        return jnp.tanh(x) * POINT_SCALE


class ILAOutput(NamedTuple):
    """What one ILA module computes (B videos, T frames, P = T - 1 pairs, L = 1 + H W tokens, D width).

    points (B, P, 4); mask_pre / mask_cur (B, P, H, W) (jitter-averaged in training); token_pre / token_cur (B, P, D):
    the masked patch tokens summed over H, W (the mutual-information tokens of the cosine loss); aligned and
    interactive (B, T, L, D): the merged features before the skip FCs (class token = the frame's message_ln token).
    """

    points: jax.Array
    mask_pre: jax.Array
    mask_cur: jax.Array
    token_pre: jax.Array
    token_cur: jax.Array
    aligned: jax.Array
    interactive: jax.Array


class ILA(nnx.Module):
    """Implicit Learnable Alignment of adjacent frames (official `models/align.py:ILA`, the `message_attn` of a block).

    `__call__(x)` takes the block's message_ln output x (B, T, L, D) and returns an `ILAOutput`.
    """

    def __init__(self, dim: int, grid_size: tuple[int, int], *, hidden: int = 256, interactive_form: str = "separable",
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        if hidden % 4:
            raise ValueError(f"the interactive width must be divisible by 4 (pre/cur halves, 2 groups); got {hidden}")
        if grid_size[0] != grid_size[1]:
            raise ValueError(f"ILA's alignment masks need a square patch grid; got {grid_size}")
        if grid_size[0] < 4:
            raise ValueError(f"ILA's prediction block pools the patch grid twice by 2; it needs >= 4x4, got {grid_size}")
        common = {"dtype": dtype, "param_dtype": param_dtype}
        self.dim = dim
        self.grid_size = tuple(grid_size)
        self.hidden = hidden
        self.interactive_block = InteractiveBlock(2 * dim, hidden, form=interactive_form, rngs=rngs, **common)
        self.prediction_block = PredictionBlock(hidden, rngs=rngs, **common)
        half = hidden // 2
        self.conv = nnx.Conv(half, half, (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)), rngs=rngs, **common)
        self.fc = nnx.Linear(half, dim, rngs=rngs, **common)

    def __call__(self, x: jax.Array, *, train: bool = False, jitter_delta: float | jax.Array | None = None) -> ILAOutput:
        """x (B, T, L, D); `train` runs BatchNorm on batch statistics; `jitter_delta` (None: no jitter) is the step of
        the nine-offset mask average (`jitter_delta(epoch)` in training)."""
        b, t, _, d = x.shape
        h, w = self.grid_size
        pairs = t - 1
        cls = x[:, :, :1]
        patches = x[:, :, 1:]
        pre, cur = patches[:, :-1], patches[:, 1:]  # (B, P, HW, D)
        stacked = jnp.concatenate([pre, cur], axis=-1).reshape(b * pairs, h, w, 2 * d)
        interactive_map = self.interactive_block(stacked, train=train)  # (B P, H, W, C)
        points = self.prediction_block(interactive_map, pairs, train=train)  # (B, P, 4)

        half = self.hidden // 2
        interactive_map = interactive_map.reshape(b, pairs, h, w, self.hidden)
        frames = merge_pairs(interactive_map[..., :half], interactive_map[..., half:])  # (B, T, H, W, C/2)
        interactive = self.fc(self.conv(frames)).reshape(b, t, h * w, d)
        interactive = jnp.concatenate([cls, interactive.astype(cls.dtype)], axis=2)

        mask_pre = jittered_alignment_mask(points[..., :2], h, jitter_delta)  # (B, P, H, W)
        mask_cur = jittered_alignment_mask(points[..., 2:], h, jitter_delta)
        masked_pre = pre * mask_pre.reshape(b, pairs, h * w, 1).astype(pre.dtype)
        masked_cur = cur * mask_cur.reshape(b, pairs, h * w, 1).astype(cur.dtype)
        aligned = jnp.concatenate([cls, merge_pairs(masked_pre, masked_cur)], axis=2)
        return ILAOutput(points, mask_pre, mask_cur, masked_pre.sum(axis=2), masked_cur.sum(axis=2), aligned,
                         interactive)


def cosine_loss(a: jax.Array, b: jax.Array) -> jax.Array:
    """mean(1 - cos(a, b)) over the leading axes (the official `cos_similarity_loss`: L2-normalise, then
    `CosineEmbeddingLoss` with target 1), in float32."""
    a = a.reshape(-1, a.shape[-1]).astype(jnp.float32)
    b = b.reshape(-1, b.shape[-1]).astype(jnp.float32)
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    eps = 1e-12  # torch's cosine_embedding_loss EPSILON
    cos = (a * b).sum(-1) / jnp.sqrt(((a * a).sum(-1) + eps) * ((b * b).sum(-1) + eps))
    return jnp.mean(1 - cos)
