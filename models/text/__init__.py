"""BERT-style text encoders: RoBERTa-base (SAMWISE's text encoder) and BERT / all-MiniLM-L6-v2 (registers
`roberta_base`, `minilm_l6_v2`), their checkpoint converters (HF, fairseq) and tokenisers."""

from models.text import variants  # noqa: F401  (registration)
from models.text.convert import convert_text_encoder, read_fairseq_checkpoint, upgrade_fairseq_state_dict
from models.text.model import (
    EncoderLayer,
    TextEmbeddings,
    TextEncoder,
    TextEncoderOutput,
    key_padding_mask,
    mean_pool,
)
from models.text.tokenizer import TextTokenizer, TokenizedBatch, bert_tokenizer, roberta_tokenizer
from models.text.variants import load_offline_minilm, offline_minilm_dir

__all__ = [
    "EncoderLayer",
    "TextEmbeddings",
    "TextEncoder",
    "TextEncoderOutput",
    "TextTokenizer",
    "TokenizedBatch",
    "bert_tokenizer",
    "convert_text_encoder",
    "key_padding_mask",
    "load_offline_minilm",
    "mean_pool",
    "offline_minilm_dir",
    "read_fairseq_checkpoint",
    "roberta_tokenizer",
    "upgrade_fairseq_state_dict",
]
