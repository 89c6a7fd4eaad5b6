"""EfficientNet-Lite (Tan & Le, EfficientNet, ICML 2019; the "Lite" edge variants of the TensorFlow TPU repository).

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of SiLU, and the stem (32) and head (1280)
widths are not scaled. NHWC throughout. Every convolution pads as TensorFlow's `padding="same"` (the definition the
released Lite weights were trained with: pad `max((ceil(n/s) - 1) * s + k - n, 0)` in total, the smaller half
before), which for stride 2 on an even size pads only after; `nnx.Conv(padding="SAME")` is exactly that rule. BatchNorm
is torch-equivalent (`models.layers.TorchBatchNorm`) with the TF epsilon 1e-3, in eval mode on its running statistics
unless `train=True`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import TorchBatchNorm

# Per stage: (repeats, kernel, stride, expand ratio, output channels): EfficientNet-B0's stages, as Lite0 uses them
# (width and depth multipliers 1.0). Stage 0 is one depthwise-separable block (expand ratio 1).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS = 1e-3  # TF's BatchNormalization epsilon, kept by the ported weights
# The stages whose last block gives the feature maps at strides 2, 4, 8, 16, 32 (timm's `feature_info`).
FEATURE_STAGES = (0, 1, 2, 4, 6)


def _he_normal_fan_out() -> Any:
    # The TF code's conv initialiser: normal with std sqrt(2 / fan_out), fan_out = k * k * output channels.
    return nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBN(nnx.Module):
    """A bias-free Conv2d with TF "same" padding, BatchNorm (eps 1e-3) and optional ReLU6."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        act: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_features, out_features, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME",
            feature_group_count=groups, use_bias=False, kernel_init=_he_normal_fan_out(), dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.bn = TorchBatchNorm(out_features, eps=BN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = self.bn(self.conv(x), train=train)
        return jnp.clip(x, 0.0, 6.0) if self.act else x


class MBConv(nnx.Module):
    """Inverted residual without SE: 1x1 expand (absent when the ratio is 1), depthwise kxk, linear 1x1 project;
    identity shortcut when the stride is 1 and the channels are unchanged."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, stride: int, expand_ratio: int, *,
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        hidden = in_features * expand_ratio
        self.expand = ConvBN(in_features, hidden, 1, **kw) if expand_ratio != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel_size, stride, groups=hidden, **kw)
        self.project = ConvBN(hidden, out_features, 1, act=False, **kw)
        self.residual = stride == 1 and in_features == out_features

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        y = self.expand(x, train=train) if self.expand is not None else x
        y = self.project(self.depthwise(y, train=train), train=train)
        return x + y if self.residual else y


class EfficientNetLite(nnx.Module):
    """EfficientNet-Lite: stem 3x3/2 (32 channels), MBConv stages, 1x1 head (1280), global average pool, linear.

    `__call__(x)` gives logits for an NHWC float batch normalised with mean = std = 0.5; `features(x)` the five maps at
    strides 2, 4, 8, 16, 32 (channels 16, 24, 40, 112, 320 for Lite0); `forward_head(x)` the logits from the stride-32
    map. Any input size works (padding is computed from the size, as in TF).
    """

    def __init__(
        self,
        *,
        stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES,
        stem_channels: int = 32,
        head_channels: int = 1280,
        num_classes: int = 1000,
        in_chans: int = 3,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.stem = ConvBN(in_chans, stem_channels, 3, 2, **kw)
        blocks, ends = [], []
        channels = stem_channels
        for repeats, kernel, stride, expand, out in stages:
            for i in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if i == 0 else 1, expand, **kw))
                channels = out
            ends.append(len(blocks) - 1)
        self.blocks = nnx.List(blocks)
        self.stage_ends = tuple(ends)
        self.feature_blocks = tuple(ends[s] for s in FEATURE_STAGES if s < len(ends))
        self.feature_channels = tuple(stages[s][4] for s in FEATURE_STAGES if s < len(stages))
        self.head = ConvBN(channels, head_channels, 1, **kw)
        self.num_features = head_channels
        self.classifier = (
            nnx.Linear(head_channels, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if num_classes > 0 else None
        )

    def _check(self, x: Any) -> None:
        shape = getattr(x, "shape", None)
        want = f"a float NHWC batch (batch, height, width, {self.in_chans})"
        if shape is None or getattr(x, "dtype", None) is None:
            raise ValueError(f"EfficientNetLite expects {want}; got {type(x).__name__}")
        if len(shape) != 4:
            hint = " (add a batch axis: x[None])" if len(shape) == 3 else ""
            raise ValueError(f"EfficientNetLite expects {want}; got rank {len(shape)} shape {tuple(shape)}{hint}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"EfficientNetLite expects {want}; got dtype {x.dtype} (convert to float and normalise "
                             "with mean = std = 0.5)")
        if shape[-1] != self.in_chans:
            hint = " (this looks like NCHW: x.transpose(0, 2, 3, 1))" if shape[1] == self.in_chans else ""
            raise ValueError(f"EfficientNetLite expects {want}; got shape {tuple(shape)}{hint}")

    def features(self, x: jax.Array, *, train: bool = False) -> list[jax.Array]:
        """The feature maps at strides 2, 4, 8, 16, 32 (the outputs of stages 0, 1, 2, 4 and 6)."""
        self._check(x)
        x = self.stem(x, train=train)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x, train=train)
            if i in self.feature_blocks:
                out.append(x)
        return out

    def forward_features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """The last stage's map (stride 32, before the 1x1 head)."""
        return self.features(x, train=train)[-1]

    def forward_head(self, x: jax.Array, *, pre_logits: bool = False, train: bool = False) -> jax.Array:
        """Logits from the stride-32 map: 1x1 head conv + BN + ReLU6, global average pool, linear."""
        x = self.head(x, train=train).mean(axis=(1, 2))
        if pre_logits or self.classifier is None:
            return x
        return self.classifier(x)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.forward_head(self.forward_features(x, train=train), train=train)
