"""The whole SAMWISE model vs the official code: a 2-frame clip and one sentence at a reduced configuration (golden
fixture, data only; how it was made: models/samwise/README.md), the CME policies, and the B+ trainable count."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.samwise import (
    FROZEN_PATTERNS,
    SAMWISE,
    SAMWISEConfig,
    apply_switch,
    convert_samwise,
    same_object_labels,
    trainable_parameters,
)
from zoo.convert import ConversionError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "samwise_forward.npz")
EPS32 = float(np.finfo(np.float32).eps)
# The fixture's reduced text encoder (a fairseq RoBERTa of 12 layers x 32) and SAMWISE settings (see the README).
TEXT = {"vocab_size": 40, "hidden_size": 32, "num_layers": 12, "num_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 18, "type_vocab_size": 1, "pad_token_id": 1, "position_style": "roberta",
        "layer_norm_eps": 1e-5}
CONFIG = SAMWISEConfig(sam2_variant="t", image_size=256, text_encoder=tuple(TEXT.items()), text_dropout=0.0,
                       cme_dropout=0.0, cme_decision_window=0)


def _bound(reference: np.ndarray, depth: int) -> float:
    # float32 rounding accumulated through `depth` stacked reductions (matmuls, attentions, norms) at the output's
    # magnitude: 64 eps x max |reference| x depth (from the magnitude, not tuned).
    return 64 * EPS32 * float(np.abs(reference).max()) * depth


# Depth of the chain that makes each output: 12 Hiera blocks + 12 text layers + 3 adapters + neck, the memory
# attention (4 layers) and the decoder (2 two-way layers + final attention + upscaling): about 40 stacked blocks.
DEPTH = 40


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _official_state_dict(fx) -> dict[str, np.ndarray]:
    """The fixture's weights: every tensor re-drawn from its saved seed and recipe (a + b N(0, 1) or a + b U[0, 1)),
    as the fixture script drew them before loading them into the official model."""
    state, offset = {}, 0
    for i, key in enumerate(fx["gen/keys"]):
        ndim = int(fx["gen/ndim"][i])
        shape = tuple(int(v) for v in fx["gen/shape"][offset: offset + ndim])
        offset += ndim
        rng = np.random.default_rng(int(fx["gen/seed"][i]))
        draw = rng.standard_normal(shape) if fx["gen/kind"][i] == 0 else rng.random(shape)
        state[str(key)] = (fx["gen/a"][i] + fx["gen/b"][i] * draw).astype(np.float32)
    for key in fx:
        if key.startswith("override/"):
            state[key.removeprefix("override/")] = fx[key]
    return state


@pytest.fixture(scope="module")
def model(fixture):
    abstract = nnx.eval_shape(lambda: SAMWISE(CONFIG, rngs=nnx.Rngs(0)))
    return convert_samwise(_official_state_dict(fixture), abstract)


def _inputs(fx):
    frames = jnp.asarray(fx["frames"].transpose(0, 2, 3, 1))[None]  # (T, C, H, W) -> (1, T, H, W, C)
    ids = jnp.asarray(fx["input_ids"])
    return frames, ids, jnp.ones_like(ids)


@nnx.jit(static_argnames="train")
def _forward(model, frames, ids, mask, train):
    outputs, state = model(frames, ids, mask, train=train)
    return outputs, state["bank"]


def _close(ours, reference, depth=DEPTH):
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    np.testing.assert_allclose(ours, reference, atol=_bound(reference, depth), rtol=0)


def _memory(bank, frame: int) -> np.ndarray:
    """The bank's memory of a frame (ring slot frame % 6) as the official (1, 64, h, w)."""
    mem = np.asarray(bank["mem"][0, frame % bank["mem"].shape[1]])
    side = round(mem.shape[0] ** 0.5)
    return mem.reshape(side, side, -1).transpose(2, 0, 1)[None]


@pytest.mark.slow
def test_eval_forward_matches_the_official_code(fixture, model):
    fx = fixture
    outputs, bank = _forward(model, *_inputs(fx), train=False)
    ref = "eval_reweight/"
    # Mask logits per frame (upsampled to 256^2 and cropped to the 192 x 256 frames), low-res masks, pointers.
    _close(outputs["masks"][0], fx[ref + "pred_masks"])
    _close(outputs["low_res_masks"][0], fx[ref + "low_res_masks"][:2, 0])
    _close(outputs["obj_ptr"][0], fx[ref + "obj_ptr"][:2])
    _close(outputs["early_obj_ptr"][0], fx[ref + "early_obj_ptr"][:2])
    _close(outputs["object_score_logits"][0], fx[ref + "object_score_logits"][:2, 0])
    # The CME ran on frame 1 only (window 0: idx > 0), decided "switch", and the memory of frame 1 is reweighted.
    assert np.asarray(outputs["cme_ran"]).tolist() == [[False, True]]
    _close(outputs["cme_logits"][0, 1:], fx[ref + "cme_logits"])
    assert np.asarray(outputs["cme_applied"]).tolist() == [[False, True]]
    _close(_memory(bank, 0), fx[ref + "maskmem_0"])
    _close(_memory(bank, 1), fx[ref + "maskmem_1"])
    # Not a vacuous comparison: masks of both signs, and the policies give frame 1 memories further apart than the
    # tolerance.
    masks = fx[ref + "pred_masks"]
    assert 0.05 < float((masks > 0).mean()) < 0.95 and float(np.abs(masks).max()) > 1.0
    policy_gap = np.abs(fx["eval_all_mask/maskmem_1"] - fx[ref + "maskmem_1"]).max()
    assert policy_gap > 2 * _bound(fx[ref + "maskmem_1"], DEPTH)


@pytest.mark.slow
def test_train_forward_matches_the_official_code(fixture, model):
    """Training mode (dropout 0 on both sides): BatchNorm on batch statistics, masks not replaced by -1024, relative
    frame ids, the CME's logits and label, the decision not applied; the running statistics advance as torch's."""
    fx = fixture
    train_model = nnx.clone(model)
    outputs, bank = _forward(train_model, *_inputs(fx), train=True)
    _close(outputs["masks"][0], fx["train/masks"][:, 0])
    _close(outputs["obj_ptr"][0], fx["train/obj_ptr"][:2])
    _close(outputs["cme_logits"][0, 1:], fx["train/cme_logits"])
    assert np.asarray(outputs["cme_labels"]).tolist() == [[-1, int(fx["train/cme_label"][0])]]
    _close(_memory(bank, 1), fx["train/maskmem_1"])
    for i, adapter in enumerate(train_model.cmt_adapters):
        for ours, theirs in ((adapter.proj_vis_down.bn, "proj_vis_down.1"), (adapter.proj_vis_up.bn, "proj_vis_up.1")):
            for name, key in (("mean", "running_mean"), ("var", "running_var")):
                ref = fx[f"train_after/cmt_adapters.{i}.{theirs}.{key}"]
                _close(getattr(ours, name)[...], ref)


@pytest.mark.parametrize("policy", ["reweight", "all_mask", "avg"])
def test_switch_policies_change_the_memory_as_officially(fixture, model, policy):
    """Frame 1's memory after a positive decision, from the fixture's decoder outputs (with and without memory) and
    frame 1's image feature, for each `switch_mem` policy (the official forward was run once per policy)."""
    from models.sam2.layers import bilinear_matrix, resize_hw

    fx = fixture
    low = jnp.asarray(fx["eval_reweight/low_res_masks"])  # frame 0, frame 1 with memory, frame 1 without
    high = resize_hw(low, (256, 256), bilinear_matrix, axes=(2, 3))
    switched = apply_switch(policy, high[1:2], high[2:3])
    feat = jnp.asarray(fx["eval_reweight/vision_feat"][:, 1].reshape(1, 16, 16, 256))
    memory = model.memory_bank()
    features = memory.encode_memory(model.sam, feat, switched, jnp.ones((1, 1)), False)
    ours = np.asarray(features[0]).reshape(16, 16, 64).transpose(2, 0, 1)[None]
    _close(ours, fx[f"eval_{policy}/maskmem_1"], depth=8)


def test_same_object_labels_follow_the_official_rule():
    height = width = 20
    full = np.full((height, width), 5.0, np.float32)
    empty = -full
    half = np.where(np.arange(width)[None] < 10, 5.0, -5.0).astype(np.float32) * np.ones((height, 1), np.float32)
    other_half = -half
    masks = jnp.asarray(np.stack([full, full, empty, full, full]))
    counterpart = jnp.asarray(np.stack([half, full, empty, other_half, empty]))
    scores = jnp.asarray([[1.0], [1.0], [1.0], [1.0], [1.0]])
    # overlap 200 of min area 200 -> 0 (same); identical -> 0; both empty -> -1; disjoint halves of a full mask:
    # 200 / 200 -> 0; full vs empty: 0 / 0 = nan -> 0 (the official arithmetic)
    assert np.asarray(same_object_labels(masks, counterpart, scores)).tolist() == [0, 0, -1, 0, 0]
    disjoint = jnp.asarray(np.stack([half]))
    assert np.asarray(same_object_labels(disjoint, jnp.asarray(np.stack([other_half])), scores[:1])).tolist() == [1]
    assert np.asarray(same_object_labels(masks[:1], counterpart[:1], -scores[:1])).tolist() == [-1]


def _count(state) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def test_b_plus_trainable_parameters_are_the_official_5_235_906():
    """The whole B+ model (SAM2 Hiera-B+ v2.0 + RoBERTa-base) built abstractly: freezing by the official rule leaves
    the three adapters, the CME and project_text, 5,235,906 parameters (spec 1.5); everything else is frozen."""
    from zoo.train.optim import trainable_filter

    abstract = nnx.eval_shape(lambda: SAMWISE(SAMWISEConfig(), rngs=nnx.Rngs(0)))
    trainable = nnx.state(abstract, trainable_filter(FROZEN_PATTERNS))
    assert _count(trainable) == 5_235_906
    assert _count(trainable_parameters(abstract)) == 5_235_906
    tops = {str(path[0]) for path, _ in nnx.to_flat_state(trainable)}
    assert tops == {"cmt_adapters", "conditional_memory_encoder", "project_text"}
    frozen = nnx.state(abstract, nnx.All(nnx.Param, nnx.Not(trainable_filter(FROZEN_PATTERNS))))
    assert {str(path[0]) for path, _ in nnx.to_flat_state(frozen)} == {"sam", "text_encoder"}
    assert _count(nnx.state(abstract.sam, nnx.Param)) == 80_833_666  # SAM2-B+ v2.0 (spec 2.1)


def test_registered_variants_build_and_validate():
    import zoo

    assert {"samwise_sam2_tiny", "samwise_sam2_base_plus", "samwise_sam2_large"} <= set(zoo.list_models("samwise*"))
    with pytest.raises(ValueError, match="unknown SAMWISE overrides"):
        zoo.create_model("samwise_sam2_tiny", rngs=nnx.Rngs(0), not_a_field=1)


def test_bad_inputs_and_checkpoints_are_clear_errors(fixture, model):
    frames, ids, mask = _inputs(fixture)
    with pytest.raises(ValueError, match=r"clips \[B, T, H, W, 3\]"):
        model(frames[0], ids, mask)
    with pytest.raises(ValueError, match="exceed image_size"):
        model(jnp.zeros((1, 2, 300, 200, 3)), ids, mask)
    with pytest.raises(ValueError, match="tokens must be"):
        model(frames, jnp.concatenate([ids, ids]), None)
    with pytest.raises(ValueError, match="switch_mem"):
        SAMWISE(SAMWISEConfig(switch_mem="nope"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="fusion_stages_txt"):
        SAMWISE(SAMWISEConfig(fusion_stages_txt=(4, 8)), rngs=nnx.Rngs(0))
    state = _official_state_dict(fixture)
    state.pop("cmt_adapters.1.hsa.linear.weight")
    state["text_encoder.model.encoder.sentence_encoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"(?s)(hsa\.linear\.kernel.*extra\.weight|extra\.weight.*hsa)"):
        convert_samwise(state, nnx.eval_shape(lambda: SAMWISE(CONFIG, rngs=nnx.Rngs(0))))


def test_a_continued_clip_traces_with_the_carried_state(fixture, model):
    """The next clip of the same video (state carried: traced frame index, memory, last CME decision) traces to the
    same outputs' shapes, with the frame index advanced (abstract evaluation: no compile)."""
    frames, ids, mask = _inputs(fixture)
    graphdef, params = nnx.split(model)

    def two_clips(params, frames, ids, mask):
        m = nnx.merge(graphdef, params)
        first, state = m(frames, ids, mask)
        second, state = m(frames, ids, mask, state=state)
        return first, second, state

    first, second, state = jax.eval_shape(two_clips, params, frames, ids, mask)
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in second.items()}
    assert second["masks"].shape == (1, 2, 192, 256) and second["cme_ran"].shape == (1, 2)
    assert state["next_frame"].shape == () and state["bank"]["mem"].shape == (1, 6, 256, 64)


@pytest.mark.parametrize(("variant", "expected"), [("t", 5_120_770), ("l", 5_466_178)])
def test_trainable_parameters_of_the_other_trunks(variant, expected):
    """Adapters 4,460,928 (tiny) / 4,806,336 (large) (spec 1.5) + CME 331,394 + project_text 328,448."""
    abstract = nnx.eval_shape(lambda: SAMWISE(SAMWISEConfig(sam2_variant=variant), rngs=nnx.Rngs(0)))
    assert _count(trainable_parameters(abstract)) == expected
