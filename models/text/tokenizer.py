"""Tokenisers for the text encoders, built with the `tokenizers` library from user-supplied files.

    tok = roberta_tokenizer("vocab.json", "merges.txt")          # or roberta_tokenizer(tokenizer_json="tokenizer.json")
    tok = bert_tokenizer("vocab.txt")                             # or bert_tokenizer(tokenizer_json="tokenizer.json")
    batch = tok(["a person walking", "a dog"])                    # TokenizedBatch(input_ids, attention_mask), int32
    encoder(batch.input_ids, batch.attention_mask)

The pipelines are those of transformers' fast tokenizers built from the same files (`RobertaTokenizerFast`:
byte-level BPE, no prefix space, `<s> ... </s>` with `RobertaProcessing`; `BertTokenizerFast`: BERT normaliser
(lower case, accents kept unless `strip_accents`), BERT pre-tokeniser, WordPiece with `##`, `[CLS] ... [SEP]`), so the
ids equal theirs. A `tokenizer.json` is used as it is, except that its own padding and truncation settings are
replaced by the call's (all-MiniLM-L6-v2's file pads every input to 128 tokens, which changes mean pooling).
Batches pad to the longest sequence (right side) with the pad id and carry the attention mask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class TokenizedBatch(NamedTuple):
    """int32 [batch, seq] token ids and attention mask (1 = real token, 0 = padding), and token types."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


def _tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - a runtime dependency of transformers-free use
        raise ImportError("the text tokenisers need the `tokenizers` package: pip install tokenizers") from err
    return tokenizers


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`: `tok(texts, max_length=None)` -> padded `TokenizedBatch`.

    Args:
      tokenizer: the `tokenizers.Tokenizer` (its padding / truncation are turned off; this class pads and truncates).
      pad_token: the padding token (its id pads the batch).
      max_length: default truncation length, special tokens included (512 for RoBERTa-base and BERT).
    """

    def __init__(self, tokenizer, *, pad_token: str, max_length: int = 512):
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.pad_token = pad_token
        self.pad_token_id = tokenizer.token_to_id(pad_token)
        if self.pad_token_id is None:
            raise ValueError(f"the vocabulary has no padding token {pad_token!r}")
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        """Vocabulary size, added tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Ids of one text (no padding or truncation)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ids."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __call__(self, texts: str | Sequence[str], *, max_length: int | None = None,
                 truncation: bool = True) -> TokenizedBatch:
        """Tokenise a batch: special tokens added, truncated to `max_length` (default `self.max_length`; special
        tokens kept), padded to the longest sequence of the batch."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts to tokenise")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        tok = self.tokenizer
        if truncation:
            tok.enable_truncation(max_length or self.max_length)
        tok.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token)
        try:
            encodings = tok.encode_batch(texts)
        finally:
            tok.no_padding()
            tok.no_truncation()
        ids = np.asarray([e.ids for e in encodings], np.int32)
        mask = np.asarray([e.attention_mask for e in encodings], np.int32)
        types = np.asarray([e.type_ids for e in encodings], np.int32)
        return TokenizedBatch(ids, mask, types)


def roberta_tokenizer(vocab_json: str | os.PathLike | None = None, merges_txt: str | os.PathLike | None = None, *,
                      tokenizer_json: str | os.PathLike | None = None, max_length: int = 512) -> TextTokenizer:
    """RoBERTa's byte-level BPE from `vocab.json` + `merges.txt` (the `FacebookAI/roberta-base` files), or a
    `tokenizer.json`; ids equal `RobertaTokenizerFast` on the same files (and the fairseq embedding rows)."""
    tokenizers = _tokenizers()
    if tokenizer_json is not None:
        return TextTokenizer(tokenizers.Tokenizer.from_file(os.fspath(tokenizer_json)), pad_token="<pad>",
                             max_length=max_length)
    if vocab_json is None or merges_txt is None:
        raise ValueError("pass vocab_json and merges_txt (roberta-base's vocab.json, merges.txt) or tokenizer_json")
    for path in (vocab_json, merges_txt):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

    with open(vocab_json, encoding="utf-8") as handle:
        vocab = json.load(handle)
    merges = []
    with open(merges_txt, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line or line.startswith("#version"):
                continue
            merges.append(tuple(line.split(" ")))
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                          end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    missing = [s for s in specials if s not in vocab]
    if missing:
        raise ValueError(f"{vocab_json} lacks RoBERTa's special tokens {missing}")
    added = [AddedToken(s, special=True) for s in specials]
    if "<mask>" in vocab:  # RoBERTa's mask token swallows the space before it
        added.append(AddedToken("<mask>", lstrip=True, special=True))
    tok.add_special_tokens(added)
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                      trim_offsets=True, add_prefix_space=False)
    return TextTokenizer(tok, pad_token="<pad>", max_length=max_length)


def bert_tokenizer(vocab_txt: str | os.PathLike | None = None, *, tokenizer_json: str | os.PathLike | None = None,
                   lowercase: bool = True, strip_accents: bool | None = None, max_length: int = 512) -> TextTokenizer:
    """BERT WordPiece from `vocab.txt` (uncased by default, as all-MiniLM-L6-v2), or a `tokenizer.json`; ids equal
    `BertTokenizerFast` on the same files."""
    tokenizers = _tokenizers()
    if tokenizer_json is not None:
        return TextTokenizer(tokenizers.Tokenizer.from_file(os.fspath(tokenizer_json)), pad_token="[PAD]",
                             max_length=max_length)
    if vocab_txt is None:
        raise ValueError("pass vocab_txt (a BERT vocab.txt) or tokenizer_json")
    if not os.path.isfile(vocab_txt):
        raise FileNotFoundError(f"tokenizer file not found: {vocab_txt}")
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

    vocab: dict[str, int] = {}
    with open(vocab_txt, encoding="utf-8") as handle:
        for line in handle:
            token = line.rstrip("\n")
            if token not in vocab:
                vocab[token] = len(vocab)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    missing = [s for s in specials[:4] if s not in vocab]
    if missing:
        raise ValueError(f"{vocab_txt} lacks BERT's special tokens {missing}")
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials if s in vocab])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return TextTokenizer(tok, pad_token="[PAD]", max_length=max_length)
