"""HF RoBERTa / BERT / MiniLM and fairseq RoBERTa state dicts -> `models.text.TextEncoder`.

Three layouts are recognised from their keys:
- Hugging Face `RobertaModel` / `BertModel` (`embeddings.word_embeddings.weight`, `encoder.layer.N.attention.self.
  query.weight`, `attention.output.dense`, `attention.output.LayerNorm`, `intermediate.dense`, `output.dense`,
  `output.LayerNorm`, `pooler.dense`), with or without the `roberta.` / `bert.` prefix of the task models
  (`FacebookAI/roberta-base`'s `model.safetensors` is a `RobertaForMaskedLM`: prefixed, with an `lm_head`, which is
  ignored, and no pooler); sentence-transformers' MiniLM is the plain BertModel layout;
- fairseq RoBERTa (`model.pt` = {'args', 'model': {...}}): `encoder.sentence_encoder.embed_tokens`, `embed_positions`,
  `layernorm_embedding` (older checkpoints: `emb_layer_norm`, and the `decoder.` prefix instead of `encoder.`, which
  fairseq's `RobertaModel.upgrade_state_dict_named` renames), `layers.N.self_attn.{q,k,v,out}_proj` (older:
  a fused `in_proj_weight` = [q; k; v], split as fairseq's `MultiheadAttention.upgrade_state_dict_named` does),
  `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm` (older: `layer_norms.0/1`); `lm_head.*` ignored.
  fairseq has no token-type embedding (HF's conversion stores a zero row: so does this one) and no pooler.

A checkpoint without a pooler (roberta-base's MLM file, fairseq) loaded into an encoder with one keeps a freshly
initialised pooler (normal(0.02), zero bias: what transformers does) and warns; build with
`add_pooling_layer=False` to have none. Every other unmapped, missing or mis-shaped key is reported at once.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from collections.abc import Mapping

import numpy as np
from flax import nnx

from zoo.convert import ConversionError, Rule, extract_state_dict, flat_paths, linear, map_state_dict, merge_into_model

# HF layer modules (regex, after `encoder.layer.N.`) -> ours (after `layers.N.`).
_HF_LINEARS = {
    r"attention\.self\.query": "attn.q_proj",
    r"attention\.self\.key": "attn.k_proj",
    r"attention\.self\.value": "attn.v_proj",
    r"attention\.output\.dense": "attn.proj",
    r"intermediate\.dense": "mlp.fc1",
    r"output\.dense": "mlp.fc2",
}
_HF_NORMS = {r"attention\.output\.LayerNorm": "attn_norm", r"output\.LayerNorm": "mlp_norm"}

_FAIRSEQ_LINEARS = {
    r"self_attn\.q_proj": "attn.q_proj",
    r"self_attn\.k_proj": "attn.k_proj",
    r"self_attn\.v_proj": "attn.v_proj",
    r"self_attn\.out_proj": "attn.proj",
    r"fc1": "mlp.fc1",
    r"fc2": "mlp.fc2",
}
_FAIRSEQ_NORMS = {r"self_attn_layer_norm": "attn_norm", r"final_layer_norm": "mlp_norm"}


def _norm_rules(source: str, target: str, *, weight: str = "weight", bias: str = "bias") -> list[Rule]:
    return [Rule(rf"{source}\.{weight}", f"{target}.scale"), Rule(rf"{source}\.{bias}", f"{target}.bias")]


def _linear_rules(source: str, target: str) -> list[Rule]:
    return [Rule(rf"{source}\.weight", f"{target}.kernel", linear), Rule(rf"{source}\.bias", f"{target}.bias")]


def _hf_rules() -> tuple[Rule, ...]:
    emb = r"embeddings"
    rules = [
        Rule(rf"{emb}\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight", r"embeddings.\1.embedding"),
        # Old BERT checkpoints (TF-converted) name LayerNorm parameters gamma / beta.
        *_norm_rules(rf"{emb}\.LayerNorm", "embeddings.norm"),
        *_norm_rules(rf"{emb}\.LayerNorm", "embeddings.norm", weight="gamma", bias="beta"),
        *_linear_rules(r"pooler\.dense", "pooler.dense"),
    ]
    layer, dest = r"encoder\.layer\.(\d+)", r"layers.\1"
    for source, target in _HF_NORMS.items():
        rules += _norm_rules(rf"{layer}\.{source}", f"{dest}.{target}")
        rules += _norm_rules(rf"{layer}\.{source}", f"{dest}.{target}", weight="gamma", bias="beta")
    for source, target in _HF_LINEARS.items():
        rules += _linear_rules(rf"{layer}\.{source}", f"{dest}.{target}")
    return tuple(rules)


def _fairseq_rules() -> tuple[Rule, ...]:
    enc = r"encoder\.sentence_encoder"
    rules = [
        Rule(rf"{enc}\.embed_tokens\.weight", "embeddings.word_embeddings.embedding"),
        Rule(rf"{enc}\.embed_positions\.weight", "embeddings.position_embeddings.embedding"),
        *_norm_rules(rf"{enc}\.(?:layernorm_embedding|emb_layer_norm)", "embeddings.norm"),
    ]
    layer, dest = rf"{enc}\.layers\.(\d+)", r"layers.\1"
    for source, target in _FAIRSEQ_NORMS.items():
        rules += _norm_rules(rf"{layer}\.{source}", f"{dest}.{target}")
    for source, target in _FAIRSEQ_LINEARS.items():
        rules += _linear_rules(rf"{layer}\.{source}", f"{dest}.{target}")
    return tuple(rules)


HF_RULES = _hf_rules()
FAIRSEQ_RULES = _fairseq_rules()

# Buffers and heads that are not encoder parameters.
HF_IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"lm_head\..*", r"cls\..*",
              r"classifier\..*", r"qa_outputs\..*")
FAIRSEQ_IGNORED = (r"encoder\.lm_head\..*", r".*\.version", r".*\._float_tensor", r"classification_heads\..*")


def detect_layout(state_dict: Mapping[str, np.ndarray]) -> str:
    """"fairseq" (keys under `encoder.sentence_encoder.` / `decoder.sentence_encoder.`) or "hf"."""
    if any(".sentence_encoder." in k or k.startswith("sentence_encoder.") for k in state_dict):
        return "fairseq"
    return "hf"


def upgrade_fairseq_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Old fairseq RoBERTa names -> current ones, as fairseq's own `upgrade_state_dict_named` methods do:
    `decoder.` -> `encoder.`, `emb_layer_norm` -> `layernorm_embedding`, `layer_norms.0/1` ->
    `self_attn_layer_norm` / `final_layer_norm`, and a fused `self_attn.in_proj_weight/bias` ([q; k; v] rows) split
    into `q_proj`, `k_proj`, `v_proj`."""
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if key.startswith("decoder."):
            key = "encoder." + key[len("decoder."):]
        key = key.replace(".emb_layer_norm.", ".layernorm_embedding.")
        key = re.sub(r"\.layer_norms\.0\.", ".self_attn_layer_norm.", key)
        key = re.sub(r"\.layer_norms\.1\.", ".final_layer_norm.", key)
        match = re.fullmatch(r"(.*\.self_attn)\.in_proj_(weight|bias)", key)
        if match:
            third = value.shape[0] // 3
            for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{match.group(1)}.{name}.{match.group(2)}"] = value[i * third:(i + 1) * third]
            continue
        out[key] = value
    return out


def _strip_task_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the `roberta.` / `bert.` prefix of HF task models (ForMaskedLM, ForSequenceClassification ...)."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("roberta.", "bert.", "model."):
            if key.startswith(prefix) and (key[len(prefix):].startswith(("embeddings.", "encoder.", "pooler."))):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def _fresh_pooler(abstract_model: nnx.Module) -> dict[str, np.ndarray]:
    from models.text.model import Pooler

    dim = abstract_model.hidden_size
    pooler = Pooler(dim, rngs=nnx.Rngs(0))
    return {f"pooler.dense.{k}": np.asarray(v) for k, v in flat_paths(nnx.state(pooler.dense, nnx.Param)).items()}


def convert_text_encoder(checkpoint, abstract_model: nnx.Module) -> nnx.Module:
    """HF RoBERTa / BERT / MiniLM or fairseq RoBERTa state dict (or a checkpoint dict holding one under 'model' /
    'state_dict') -> `TextEncoder` (see the module docstring)."""
    state_dict = dict(extract_state_dict(checkpoint, prefix="module."))
    layout = detect_layout(state_dict)
    abstract_state = nnx.state(abstract_model, nnx.Not(nnx.RngState))
    expected = flat_paths(abstract_state)
    allow_missing: list[str] = []
    if layout == "fairseq":
        state_dict = upgrade_fairseq_state_dict(state_dict)
        rules, ignore = FAIRSEQ_RULES, FAIRSEQ_IGNORED
        # fairseq RoBERTa has no segment embedding; HF's converter stores zeros, as merge_into_model does.
        allow_missing.append(r"embeddings\.token_type_embeddings\.embedding")
    else:
        state_dict = _strip_task_prefix(state_dict)
        rules, ignore = HF_RULES, HF_IGNORED
    has_pooler = any("pooler" in k for k in state_dict)
    fresh_pooler = "pooler.dense.kernel" in expected and not has_pooler
    if fresh_pooler:
        allow_missing.append(r"pooler\..*")
    arrays = map_state_dict(state_dict, rules, abstract_state, ignore=ignore, allow_missing=allow_missing,
                            source=f"{layout} text-encoder checkpoint")
    if fresh_pooler:
        warnings.warn(
            "the checkpoint has no pooler (roberta-base's MLM checkpoint and fairseq RoBERTa have none): the pooler "
            "is freshly initialised, as transformers does; build with add_pooling_layer=False to have none",
            stacklevel=2,
        )
        arrays.update(_fresh_pooler(abstract_model))
    return merge_into_model(abstract_model, arrays)


def read_fairseq_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The `model` state dict of a fairseq `model.pt` (e.g. roberta.base/model.pt from the fairseq tarball).

    fairseq stores its training `args` (an `argparse.Namespace`) next to the weights, which the zoo's safe reader
    refuses: this loads with `torch.load(weights_only=True)` allowing only `argparse.Namespace` besides tensors.
    A checkpoint with other objects (a newer fairseq's omegaconf `cfg`) raises, saying how to re-save its weights.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError("reading a fairseq model.pt needs torch (pip install torch)") from err
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fairseq checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConversionError(
            f"cannot read {path} safely ({type(err).__name__}: {err}). If you trust the file, re-save its weights: "
            f"python -c \"import torch; torch.save(torch.load('{path}', weights_only=False)['model'], 'weights.pt')\" "
            "and load weights.pt"
        ) from err
    model = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    return {k: v.detach().cpu().numpy() for k, v in model.items() if hasattr(v, "detach")}
