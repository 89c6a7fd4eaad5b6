"""Official ILA checkpoints -> NNX, and ILA initialisation from OpenAI / open_clip CLIP weights.

Official checkpoints (`utils/helper.py:epoch_saving`) are `{'model', 'optimizer', 'lr_scheduler', 'max_accuracy',
'epoch', 'config'}`; `model` is the XCLIP state dict, keys possibly prefixed `module.`. The CLIP parts keep CLIP's
names and go through `models.clip.convert`'s rules; the ILA parts map as follows (per block
`visual.transformer.resblocks.N.`):

| official | NNX |
|---|---|
| `message_fc`, `message_ln`, `temporal_skip_fc`, `temporal_skip_align_fc` | same names |
| `message_attn.interactive_block.0.{depthwise_conv,pointwise_conv}.{0,1}`, `.1`, `.2` (K400) | `message_attn.interactive_block.layers.{0,1,2}.{conv,bn}` |
| `message_attn.interactive_block.{0,1,3,4}` (SSv2) | `message_attn.interactive_block.layers.{0,1}.{conv,bn}` |
| `message_attn.prediction_block.{0,1,4,5,10,12}` | `message_attn.prediction_block.{conv1.conv, conv1.bn, conv2.conv, conv2.bn, fc1, fc2}` |
| `message_attn.conv` (Conv3d), `message_attn.fc` | same names |
| BatchNorm `weight`, `bias`, `running_mean`, `running_var` | `scale`, `bias`, `mean`, `var` (`num_batches_tracked` dropped) |
| `mit.positional_embedding`, `mit.resblocks.N.*` (CLIP block names), `mit.classify_head.{0,2}` (SSv2) | `mit.*`, `mit.classify_head.{norm,fc}` |
| `prompts_generator.{norm, alpha, decoder.N.{cross_attn.{q,k,v}_proj, cross_attn.proj, norm1, norm3, mlp.0, mlp.3}}` | same, `mlp.0`/`mlp.3` -> `mlp.fc1`/`mlp.fc2` |
| `prompts_visual_ln`, `prompts_visual_proj`, `logit_scale`, CLIP text keys (K400) | `prompts_visual_ln`, `prompts_visual_proj`, `logit_scale`, `text.*` |
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from flax import nnx

from models.clip.convert import CLIP_RULES, block_rules
from models.clip.convert import IGNORED as CLIP_IGNORED
from models.vit.convert import resample_abs_pos_embed
from zoo.convert import (
    CheckpointReadError,
    Rule,
    _TensorOnlyUnpickler,
    _to_numpy_tree,
    batch_norm_rules,
    conv1d,
    conv2d,
    extract_state_dict,
    flat_paths,
    kernel_rules,
    linear,
    map_state_dict,
    merge_into_model,
    norm_rules,
    read_checkpoint,
)

_BLOCK = r"visual\.transformer\.resblocks\.(\d+)"
_DEST = r"visual.transformer.resblocks.\1"


def conv3d(x: np.ndarray) -> np.ndarray:
    """torch Conv3d weight (out, in/groups, kt, kh, kw) -> flax kernel (kt, kh, kw, in/groups, out)."""
    return x.transpose(2, 3, 4, 1, 0)


def _of_rank(transform, ndim: int):
    """`transform` for tensors of rank `ndim`; others pass unchanged, so that the shape check reports them."""
    return lambda x: transform(x) if x.ndim == ndim else x


def _linear(src: str, dst: str) -> list[Rule]:
    return kernel_rules(src, dst, _of_rank(linear, 2))


def _conv(src: str, dst: str, transform=conv2d, ndim: int = 4) -> list[Rule]:
    return kernel_rules(src, dst, _of_rank(transform, ndim))


def _conv_bn(conv_src: str, bn_src: str, dst: str) -> list[Rule]:
    return [*_conv(conv_src, dst + ".conv"), *batch_norm_rules(bn_src, dst + ".bn")]


def _interactive_rules(form: str) -> list[Rule]:
    src = _BLOCK + r"\.message_attn\.interactive_block"
    dst = _DEST + ".message_attn.interactive_block.layers"
    if form == "full":  # SSv2: Conv 2D->C, BN, ReLU, Conv C->C, BN, ReLU
        return [*_conv_bn(src + r"\.0", src + r"\.1", dst + ".0"), *_conv_bn(src + r"\.3", src + r"\.4", dst + ".1")]
    return [  # K400: Depth_Separable_Convolution (depthwise, pointwise), Conv C->C, BN, ReLU
        *_conv_bn(src + r"\.0\.depthwise_conv\.0", src + r"\.0\.depthwise_conv\.1", dst + ".0"),
        *_conv_bn(src + r"\.0\.pointwise_conv\.0", src + r"\.0\.pointwise_conv\.1", dst + ".1"),
        *_conv_bn(src + r"\.1", src + r"\.2", dst + ".2"),
    ]


def _ila_rules(form: str) -> list[Rule]:
    src, dst = _BLOCK + r"\.message_attn", _DEST + ".message_attn"
    return [
        *_linear(_BLOCK + r"\.(message_fc|temporal_skip_fc|temporal_skip_align_fc)", _DEST + r".\2"),
        *norm_rules(_BLOCK + r"\.message_ln", _DEST + ".message_ln"),
        *_interactive_rules(form),
        *_conv(src + r"\.prediction_block\.0", dst + ".prediction_block.conv1.conv"),
        *batch_norm_rules(src + r"\.prediction_block\.1", dst + ".prediction_block.conv1.bn"),
        *_conv(src + r"\.prediction_block\.4", dst + ".prediction_block.conv2.conv"),
        *batch_norm_rules(src + r"\.prediction_block\.5", dst + ".prediction_block.conv2.bn"),
        *_conv(src + r"\.prediction_block\.10", dst + ".prediction_block.fc1", conv1d, 3),
        *_conv(src + r"\.prediction_block\.12", dst + ".prediction_block.fc2", conv1d, 3),
        *_conv(src + r"\.conv", dst + ".conv", conv3d, 5),
        *_linear(src + r"\.fc", dst + ".fc"),
    ]


def _head_rules() -> list[Rule]:
    prompt = r"prompts_generator\.decoder\.(\d+)"
    prompt_dst = r"prompts_generator.decoder.\1"
    return [
        Rule(r"mit\.positional_embedding", "mit.positional_embedding"),
        *block_rules(r"mit", "mit"),
        *norm_rules(r"mit\.classify_head\.0", "mit.classify_head.norm"),
        *_linear(r"mit\.classify_head\.2", "mit.classify_head.fc"),
        Rule(r"prompts_generator\.alpha", "prompts_generator.alpha"),
        *norm_rules(r"prompts_generator\.norm", "prompts_generator.norm"),
        Rule(prompt + r"\.cross_attn\.(q_proj|k_proj|v_proj)\.weight", prompt_dst + r".cross_attn.\2.kernel",
             _of_rank(linear, 2)),
        *_linear(prompt + r"\.cross_attn\.proj", prompt_dst + ".cross_attn.proj"),
        *norm_rules(prompt + r"\.(norm1|norm3)", prompt_dst + r".\2"),
        *_linear(prompt + r"\.mlp\.0", prompt_dst + ".mlp.fc1"),
        *_linear(prompt + r"\.mlp\.3", prompt_dst + ".mlp.fc2"),
        *norm_rules(r"prompts_visual_ln", "prompts_visual_ln"),
        Rule(r"prompts_visual_proj", "prompts_visual_proj"),
    ]


def ila_rules(interactive_form: str = "separable") -> tuple[Rule, ...]:
    """The rules of an official ILA state dict: ILA parts, heads, then CLIP's (`models.clip.convert.CLIP_RULES`)."""
    return (*_ila_rules(interactive_form), *_head_rules(), *CLIP_RULES)


# BatchNorm step counters and CLIP's non-parameter entries.
IGNORED = (r".*\.num_batches_tracked", *CLIP_IGNORED)


def _maybe_resample_pos_embed(state_dict: dict[str, np.ndarray], abstract_model: nnx.Module) -> None:
    """Resample `visual.positional_embedding` (torch bicubic, no antialias) when the model's grid differs."""
    key = "visual.positional_embedding"
    expected = flat_paths(nnx.state(abstract_model, nnx.Param))
    if key not in state_dict or key not in expected:
        return
    have, want = state_dict[key], tuple(expected[key].shape)
    old = have.shape[0] - 1
    if have.ndim == 2 and have.shape != want and have.shape[1] == want[1] and math.isqrt(old) ** 2 == old:
        state_dict[key] = resample_abs_pos_embed(have, abstract_model.visual.grid_size, num_prefix_tokens=1,
                                                 antialias=False)


def convert_ila(checkpoint: Any, abstract_model: nnx.Module) -> nnx.Module:
    """An official ILA checkpoint (the training dict or its `model` state dict, `module.` prefix or not) ->
    `ILAVideoClassifier`, BatchNorm running statistics included. Every unmapped, missing and mis-shaped key is
    reported at once (`zoo.convert.ConversionError`)."""
    state_dict = dict(extract_state_dict(checkpoint, keys=("model", "state_dict", "module"), prefix="module."))
    form = abstract_model.visual.transformer.resblocks[0].message_attn.interactive_block.form
    rules = ila_rules(form)
    state = nnx.state(abstract_model, nnx.Not(nnx.RngState))
    arrays = map_state_dict(state_dict, rules, state, ignore=IGNORED, source="ILA checkpoint")
    return merge_into_model(abstract_model, arrays)


# The model paths an OpenAI CLIP checkpoint does not provide: everything ILA adds on top of the towers.
ILA_ONLY = (r"visual\.transformer\.resblocks\.\d+\.(message_|temporal_).*", r"mit\..*", r"prompts_.*")


def load_clip_weights(model: nnx.Module, checkpoint: Any) -> nnx.Module:
    """Initialise `model`'s CLIP towers (image tower; text tower and logit_scale for the X-CLIP head) from an
    OpenAI / open_clip CLIP state dict (as `models.clip.convert`), in place; the ILA blocks, MIT and prompts keep
    their initialisation (the official `build_model` loads CLIP with `strict=False` in the same way).

    A linear (SSv2) model has no text tower: the checkpoint's text keys are skipped. Returns the model.
    """
    state_dict = dict(extract_state_dict(checkpoint, prefix="module.")) if isinstance(checkpoint, Mapping) else checkpoint
    _maybe_resample_pos_embed(state_dict, model)
    if getattr(model, "text", None) is None:  # skip the text tower and logit_scale
        state_dict = {k: v for k, v in state_dict.items() if k.startswith("visual.")}
    state = nnx.state(model, nnx.Param)
    arrays = map_state_dict(state_dict, CLIP_RULES, state, ignore=CLIP_IGNORED, allow_missing=ILA_ONLY,
                            source="CLIP checkpoint")
    flat = []
    for path, leaf in nnx.to_flat_state(state):
        key = ".".join(str(p) for p in path)
        if key in arrays:
            leaf = leaf.replace(np.asarray(arrays[key]))
        flat.append((path, leaf))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


class _PickledConfig(dict):
    """Stands in for `yacs.config.CfgNode` while reading an official checkpoint: the training config that
    `epoch_saving` pickles next to the weights. It rebuilds as a plain dict (its attributes are dropped), so no yacs
    code runs and yacs need not be installed."""

    def __setstate__(self, state: Any) -> None:
        pass


class _ConfigUnpickler(_TensorOnlyUnpickler):
    """zoo.convert's tensor-only unpickler that also rebuilds a yacs CfgNode as `_PickledConfig`."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        **_TensorOnlyUnpickler._ALLOWED, ("yacs.config", "CfgNode"): _PickledConfig,
    }


def read_official_checkpoint(path: str | os.PathLike) -> Any:
    """Read an official ILA `.pth` (nested dicts of numpy arrays; `config` as a plain dict).

    `utils/helper.py:epoch_saving` pickles the yacs `config` with the weights, which `torch.load(weights_only=True)`
    (and so `zoo.convert.read_checkpoint`) refuses. Such files are read with zoo.convert's tensor-only unpickler,
    extended by `yacs.config.CfgNode` (rebuilt as a dict): still no arbitrary object is unpickled, and neither torch
    nor yacs is needed. Other files go through `zoo.convert.read_checkpoint`.
    """
    try:
        return read_checkpoint(path)
    except CheckpointReadError as err:
        if "CfgNode" not in str(err):
            raise
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointReadError(f"{path}: a zip file without data.pkl is not a torch checkpoint")
        prefix = pickles[0].rsplit("/", 1)[0] if "/" in pickles[0] else ""
        return _to_numpy_tree(_ConfigUnpickler(archive.read(pickles[0]), archive, prefix).load())
