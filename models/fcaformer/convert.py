"""Official FcaFormer checkpoints (hkzhang-git/FcaFormer) -> NNX `FcaFormer`.

The official training checkpoint is ConvNeXt-style: `{"model": state_dict, "model_ema": state_dict, "optimizer": ...,
"epoch": ...}`; a bare state dict works too. `model` is used unless EMA weights are asked for, either with
`convert_fcaformer(..., use_ema=True)` or by building the model with `use_ema=True`
(`zoo.create_model("fcaformer_l2", pretrained=path, use_ema=True)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from zoo.convert import (
    CheckpointReadError,
    Rule,
    batch_norm_rules,
    conv2d,
    extract_state_dict,
    flat_paths,
    kernel_rules,
    map_state_dict,
    merge_into_model,
    norm_rules,
)


def _conv_bn(torch_prefix: str, nnx_prefix: str) -> list[Rule]:
    """Rules of one official `Conv2d_BN` (`.c` conv, `.bn` BatchNorm2d) onto a `ConvBN`."""
    return [
        Rule(torch_prefix + r"\.c\.weight", nnx_prefix + ".conv.kernel", conv2d),
        *batch_norm_rules(torch_prefix + r"\.bn", nnx_prefix + ".bn"),
    ]


_CX = r"layer_([01])\.blocks\.(\d+)"  # ConvNeXt blocks of stages 0-1
_FCA = r"layer_([23])\.blocks\.(\d+)"  # FcaBlocks of stages 2-3
_CX_T = r"stages.\1.blocks.\2"
_FCA_T = r"stages.\1.blocks.\2"

RULES: tuple[Rule, ...] = (
    *_conv_bn(r"patch_embed\.seq\.0", "patch_embed.conv1"),
    *_conv_bn(r"patch_embed\.seq\.2", "patch_embed.conv2"),
    # ConvNeXt blocks
    Rule(_CX + r"\.dwconv\.weight", _CX_T + ".dwconv.kernel", conv2d),
    Rule(_CX + r"\.dwconv\.bias", _CX_T + ".dwconv.bias"),
    *norm_rules(_CX + r"\.norm", _CX_T + ".norm"),
    *kernel_rules(_CX + r"\.pwconv1", _CX_T + ".pwconv1"),
    *kernel_rules(_CX + r"\.pwconv2", _CX_T + ".pwconv2"),
    Rule(_CX + r"\.gamma", _CX_T + ".gamma"),
    # PatchMerging after stages 0, 1, 2
    *_conv_bn(r"layer_(\d)\.downsample\.conv([123])", r"stages.\1.downsample.conv\2"),
    # FcaBlocks: parameters kept in their official shapes
    Rule(_FCA + r"\.(gamma_1|gamma_2|attention_biases|s_token_bias|s_scale_factors)", _FCA_T + r".\3"),
    Rule(_FCA + r"\.dw_conv\.weight", _FCA_T + ".dw_conv.kernel", conv2d),
    *norm_rules(_FCA + r"\.(norm1|norm2|s_norm)", _FCA_T + r".\3"),
    *norm_rules(_FCA + r"\.mlp\.norm", _FCA_T + ".mlp_norm"),  # the official MLP's inner LN sits on the block
    *kernel_rules(_FCA + r"\.(qkv|proj)", _FCA_T + r".attn.\3"),  # models.layers.Attention
    *kernel_rules(_FCA + r"\.mlp\.(fc1|fc2)", _FCA_T + r".mlp.\3"),  # models.layers.Mlp
    *_conv_bn(_FCA + r"\.local_conv", _FCA_T + ".local_conv"),
    # head
    *norm_rules(r"norm_head", "norm_head"),
    *kernel_rules(r"head", "head"),
)

# BatchNorm step counters, and the relative-position index table (non-persistent officially; recomputed here).
IGNORE: tuple[str, ...] = (r".*\.num_batches_tracked", r".*\.attention_bias_idxs")


def select_state_dict(checkpoint: Any, *, use_ema: bool = False) -> dict[str, np.ndarray]:
    """The flat state dict of an official checkpoint: `model` (default) or `model_ema`, or a bare state dict."""
    if use_ema:
        if not (isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model_ema"), Mapping)):
            keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
            raise CheckpointReadError(f"EMA weights requested but the checkpoint has no 'model_ema' entry ({keys})")
        return extract_state_dict(checkpoint["model_ema"], prefix="module.")
    return extract_state_dict(checkpoint, keys=("model", "state_dict", "module"), prefix="module.")


def _rng_arrays(abstract_state: nnx.State) -> dict[str, Any]:
    """Fresh values for the drop-path RNG streams (present only when drop_path_rate > 0): not in any checkpoint."""
    arrays = {}
    for i, (path, leaf) in enumerate(nnx.to_flat_state(abstract_state)):
        key = ".".join(str(p) for p in path)
        if isinstance(leaf, nnx.RngKey):
            arrays[key] = jax.random.fold_in(jax.random.key(0), i)
        elif isinstance(leaf, nnx.RngCount):
            value = leaf.get_value()
            arrays[key] = np.zeros(value.shape, value.dtype)
    return arrays


def convert_fcaformer(checkpoint: Any, abstract_model: nnx.Module, *, use_ema: bool | None = None) -> nnx.Module:
    """Map an official FcaFormer checkpoint onto `abstract_model` (from `nnx.eval_shape`); returns the model.

    `checkpoint` is what `zoo.convert.read_checkpoint` returns. `use_ema=None` follows the model's `use_ema` flag.
    Every unmapped, missing or mis-shaped key is reported at once in a `zoo.convert.ConversionError`.
    """
    if use_ema is None:
        use_ema = bool(getattr(abstract_model, "use_ema", False))
    state_dict = select_state_dict(checkpoint, use_ema=use_ema)
    weights = nnx.state(abstract_model, (nnx.Param, nnx.BatchStat))
    arrays = map_state_dict(
        state_dict, RULES, weights, ignore=IGNORE,
        source=f"FcaFormer checkpoint ({'model_ema' if use_ema else 'model'} weights)",
    )
    arrays.update(_rng_arrays(nnx.state(abstract_model, nnx.RngState)))
    unknown = set(flat_paths(nnx.state(abstract_model))) - set(arrays)
    if unknown:  # a variable type this converter does not know: better an error than silent zeros
        raise ValueError(f"convert_fcaformer cannot fill model variables {sorted(unknown)[:10]}")
    return merge_into_model(abstract_model, arrays)
