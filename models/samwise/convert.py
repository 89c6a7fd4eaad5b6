"""Official SAMWISE weights -> NNX: the whole model (`convert_samwise`) and its new parts alone (the CMT adapters,
the Conditional Memory Encoder).

A SAMWISE `.pth` is `{'model': SAMWISE.state_dict(), 'optimizer', ...}` with the prefixes (spec 1.6):

| official | ours |
|---|---|
| `sam.*` (SAM 2.0, the SAM2 key layout) | `sam.*` through `models.sam2.convert.RULES` |
| `sam.sam_prompt_encoder.project_text.layers.{0,1,2}.*` | `project_text.layers.{0,1,2}.*` |
| `text_encoder.model.encoder.sentence_encoder.*` (fairseq RoBERTa) | `text_encoder.*` through `models.text.convert.FAIRSEQ_RULES` |
| `text_encoder.model.encoder.lm_head.*`, `text_encoder._float_tensor` | ignored (the MLM head and a fairseq buffer) |
| `cmt_adapters.{i}.*` | `cmt_adapters.{i}.*`, the adapter table below |
| `conditional_memory_encoder.*` | `conditional_memory_encoder.*`, `cme_rules` |

fairseq RoBERTa has no token-type table: its zero row is filled in. One `ConversionError` lists every unmapped,
missing and mis-shaped key of all the parts at once.

Official adapter keys (`models/CMT_adapter.py`), under a prefix such as `adapters.0.` (any prefix: `prefix=`):

| official | ours |
|---|---|
| `proj_vis_down.0.weight` (Conv2d 1x1, (out, in, 1, 1)) | `proj_vis_down.conv.kernel` (in, out) |
| `proj_vis_down.1.{weight,bias,running_mean,running_var}` (BatchNorm2d) | `proj_vis_down.bn.{scale,bias,mean,var}` |
| `proj_vis_up.0.weight` (ConvTranspose2d 1x1, (in, out, 1, 1)) | `proj_vis_up.conv.kernel` (in, out), as stored |
| `proj_vis_up.1.*` | `proj_vis_up.bn.*` |
| `proj_text_down.0.weight`, `proj_text_up.0.weight` (Linear, no bias) | `proj_text_{down,up}.kernel` |
| `ca_V2T.multihead_attn.in_proj_{weight,bias}` ([q; k; v]) | `ca_V2T.multihead_attn.{q,k,v}_proj.*` |
| `ca_V2T.multihead_attn.out_proj.*`, same for `ca_T2V` | `ca_*.multihead_attn.proj.*` |
| `hsa.self_attn.in_proj_{weight,bias}`, `hsa.self_attn.out_proj.*`, `hsa.linear.*` | `hsa.self_attn.qkv.*`, `hsa.self_attn.proj.*`, `hsa.linear.*` |
| `spatial_pos_embed`, `norm_pre_HSA.{weight,bias}` | same names (`scale` for the weight) |

BatchNorm `num_batches_tracked` is dropped. Every unmapped, missing or mis-shaped key is reported at once
(`zoo.convert.ConversionError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from zoo.convert import Rule, extract_state_dict, linear, map_state_dict, merge_into_model


def _squeeze_1x1(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], x.shape[1])


def _conv1x1(x: np.ndarray) -> np.ndarray:
    """Conv2d 1x1 weight (out, in, 1, 1) -> Linear kernel (in, out)."""
    return _squeeze_1x1(x).T if x.ndim == 4 else x


def _conv_transpose1x1(x: np.ndarray) -> np.ndarray:
    """ConvTranspose2d 1x1 weight (in, out, 1, 1) -> Linear kernel (in, out) (no transpose)."""
    return _squeeze_1x1(x) if x.ndim == 4 else x


def split_mha_in_proj(state_dict: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """torch `nn.MultiheadAttention` packs q / k / v as `in_proj_{weight,bias}` ([q; k; v] rows); for the modules
    named in `names` (prefixes ending in `multihead_attn`), split them into `q_proj` / `k_proj` / `v_proj` keys."""
    out = dict(state_dict)
    for key in list(out):
        for kind in ("weight", "bias"):
            suffix = f".in_proj_{kind}"
            if key.endswith(suffix) and key[: -len(suffix)].endswith(names):
                base = key[: -len(suffix)]
                for part, value in zip(("q_proj", "k_proj", "v_proj"), np.split(out.pop(key), 3, axis=0), strict=True):
                    out[f"{base}.{part}.{kind}"] = value
    return out


def adapter_rules(source: str = "", target: str = "") -> tuple[Rule, ...]:
    """Rules of one CMT adapter's official keys under `source` onto a `CMTAdapter` at `target` (regex-escaped
    `source`)."""
    s, t = source.replace(".", r"\."), target
    rules = [
        Rule(rf"{s}proj_vis_down\.0\.weight", f"{t}proj_vis_down.conv.kernel", _conv1x1),
        Rule(rf"{s}proj_vis_up\.0\.weight", f"{t}proj_vis_up.conv.kernel", _conv_transpose1x1),
        Rule(rf"{s}proj_text_(down|up)\.0\.weight", rf"{t}proj_text_\1.kernel", linear),
        Rule(rf"{s}spatial_pos_embed", f"{t}spatial_pos_embed"),
        Rule(rf"{s}norm_pre_HSA\.weight", f"{t}norm_pre_HSA.scale"),
        Rule(rf"{s}norm_pre_HSA\.bias", f"{t}norm_pre_HSA.bias"),
        Rule(rf"{s}hsa\.self_attn\.in_proj_weight", f"{t}hsa.self_attn.qkv.kernel", linear),
        Rule(rf"{s}hsa\.self_attn\.in_proj_bias", f"{t}hsa.self_attn.qkv.bias"),
        Rule(rf"{s}hsa\.self_attn\.out_proj\.weight", f"{t}hsa.self_attn.proj.kernel", linear),
        Rule(rf"{s}hsa\.self_attn\.out_proj\.bias", f"{t}hsa.self_attn.proj.bias"),
        Rule(rf"{s}hsa\.linear\.weight", f"{t}hsa.linear.kernel", linear),
        Rule(rf"{s}hsa\.linear\.bias", f"{t}hsa.linear.bias"),
    ]
    for proj in ("proj_vis_down", "proj_vis_up"):
        for ours, theirs in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")):
            rules.append(Rule(rf"{s}{proj}\.1\.{theirs}", f"{t}{proj}.bn.{ours}"))
    for ca in ("ca_V2T", "ca_T2V"):
        mha = rf"{s}{ca}\.multihead_attn"
        rules += [
            Rule(rf"{mha}\.([qkv]_proj)\.weight", rf"{t}{ca}.multihead_attn.\1.kernel", linear),
            Rule(rf"{mha}\.([qkv]_proj)\.bias", rf"{t}{ca}.multihead_attn.\1.bias"),
            Rule(rf"{mha}\.out_proj\.weight", f"{t}{ca}.multihead_attn.proj.kernel", linear),
            Rule(rf"{mha}\.out_proj\.bias", f"{t}{ca}.multihead_attn.proj.bias"),
        ]
    return tuple(rules)


IGNORED = (r".*num_batches_tracked",)


def convert_cmt_adapter(state_dict: Mapping[str, Any], abstract_adapter: nnx.Module, *, prefix: str = "",
                        source: str = "CMT adapter") -> nnx.Module:
    """An official `CMT_adapter` state dict (keys under `prefix`) -> a concrete `CMTAdapter` like `abstract_adapter`."""
    sd = {k: np.asarray(v) for k, v in state_dict.items() if k.startswith(prefix)}
    sd = split_mha_in_proj(sd, ("ca_V2T.multihead_attn", "ca_T2V.multihead_attn"))
    state = nnx.state(abstract_adapter, nnx.Not(nnx.RngState))
    arrays = map_state_dict(sd, adapter_rules(prefix), state, ignore=IGNORED, source=source)
    return merge_into_model(abstract_adapter, arrays)


def cme_rules(source: str = "", target: str = "") -> tuple[Rule, ...]:
    """Official `ConditionalMemoryEncoder` keys under `source` -> `ConditionalMemoryEncoder` at `target`."""
    s, t = source.replace(".", r"\."), target
    block = rf"{s}transformerBlock"
    return (
        Rule(rf"{block}\.self_attn\.in_proj_weight", f"{t}transformerBlock.self_attn.qkv.kernel", linear),
        Rule(rf"{block}\.self_attn\.in_proj_bias", f"{t}transformerBlock.self_attn.qkv.bias"),
        Rule(rf"{block}\.self_attn\.out_proj\.weight", f"{t}transformerBlock.self_attn.proj.kernel", linear),
        Rule(rf"{block}\.self_attn\.out_proj\.bias", f"{t}transformerBlock.self_attn.proj.bias"),
        Rule(rf"{block}\.(linear[12])\.weight", rf"{t}transformerBlock.\1.kernel", linear),
        Rule(rf"{block}\.(linear[12])\.bias", rf"{t}transformerBlock.\1.bias"),
        Rule(rf"{block}\.(norm[123])\.weight", rf"{t}transformerBlock.\1.scale"),
        Rule(rf"{block}\.(norm[123])\.bias", rf"{t}transformerBlock.\1.bias"),
        Rule(rf"{s}decision_token\.weight", f"{t}decision_token"),
        Rule(rf"{s}decision_class_head\.weight", f"{t}decision_class_head.kernel", linear),
        Rule(rf"{s}decision_class_head\.bias", f"{t}decision_class_head.bias"),
    )


def convert_cme(state_dict: Mapping[str, Any], abstract_cme: nnx.Module, *, prefix: str = "",
                source: str = "conditional memory encoder") -> nnx.Module:
    """An official `ConditionalMemoryEncoder` state dict (keys under `prefix`) -> a concrete module like
    `abstract_cme` (the officially unused `transformerBlock.norm2` included)."""
    sd = {k: np.asarray(v) for k, v in state_dict.items() if k.startswith(prefix)}
    state = nnx.state(abstract_cme, nnx.Not(nnx.RngState))
    arrays = map_state_dict(sd, cme_rules(prefix), state, source=source)
    return merge_into_model(abstract_cme, arrays)



SAMWISE_IGNORED = (
    r".*num_batches_tracked",
    r"text_encoder\._float_tensor",
    r"text_encoder\.model\.encoder\.lm_head\..*",
    r"text_encoder\.model\..*\.version",
)


def samwise_rules(num_adapters: int) -> tuple[Rule, ...]:
    """Every rule of the whole model, on the official SAMWISE key names (first match wins)."""
    from models.sam2.convert import RULES as SAM2_RULES
    from models.text.convert import FAIRSEQ_RULES

    rules = [
        Rule(r"sam\.sam_prompt_encoder\.project_text\.layers\.(\d)\.weight", r"project_text.layers.\1.kernel", linear),
        Rule(r"sam\.sam_prompt_encoder\.project_text\.layers\.(\d)\.bias", r"project_text.layers.\1.bias"),
    ]
    rules += [Rule(rf"sam\.{r.pattern}", f"sam.{r.target}", r.transform) for r in SAM2_RULES]
    rules += [Rule(rf"text_encoder\.model\.{r.pattern}", f"text_encoder.{r.target}", r.transform)
              for r in FAIRSEQ_RULES]
    for i in range(num_adapters):
        rules += adapter_rules(f"cmt_adapters.{i}.", f"cmt_adapters.{i}.")
    rules += cme_rules("conditional_memory_encoder.", "conditional_memory_encoder.")
    return tuple(rules)


def convert_samwise(checkpoint: Any, abstract_model: nnx.Module) -> nnx.Module:
    """An official SAMWISE checkpoint (`{'model': state_dict}` or the state dict) -> a concrete `SAMWISE` like
    `abstract_model` (from `nnx.eval_shape`)."""
    from models.sam2.convert import _check_variant
    from models.text.convert import upgrade_fairseq_state_dict

    sd = {k: np.asarray(v) for k, v in extract_state_dict(checkpoint, prefix="module.").items()}
    text_prefix = "text_encoder.model."
    text = {k[len(text_prefix):]: v for k, v in sd.items() if k.startswith(text_prefix)}
    sd = {k: v for k, v in sd.items() if not k.startswith(text_prefix)}
    sd.update({text_prefix + k: v for k, v in upgrade_fairseq_state_dict(text).items()})
    sd = split_mha_in_proj(sd, ("ca_V2T.multihead_attn", "ca_T2V.multihead_attn"))
    _check_variant({k[len("sam."):]: v for k, v in sd.items() if k.startswith("sam.")}, abstract_model.sam.config)
    state = nnx.state(abstract_model, nnx.Not(nnx.RngState))
    arrays = map_state_dict(sd, samwise_rules(len(abstract_model.cmt_adapters)), state, ignore=SAMWISE_IGNORED,
                            allow_missing=(r"text_encoder\.embeddings\.token_type_embeddings\.embedding",),
                            source="SAMWISE checkpoint")
    return merge_into_model(abstract_model, arrays)
