"""SAMWISE's CMT adapter vs the official code (golden fixture at reduced width, data only), eval and train mode."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.samwise import CMTAdapter, convert_cmt_adapter, sine_time_embedding
from zoo.convert import ConversionError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "samwise_cmt_adapter.npz")
VIS, TXT, ADA, P, T = 24, 20, 16, 2, 3
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _adapter(fixture):
    state = {k.removeprefix("state/"): v for k, v in fixture.items() if k.startswith("state/")}
    abstract = nnx.eval_shape(lambda: CMTAdapter(VIS, TXT, ADA, hsa_patch_size=P, rngs=nnx.Rngs(0)))
    return convert_cmt_adapter(state, abstract, prefix="adapter.")


def _inputs(fixture):
    vis = jnp.asarray(fixture["vis"].transpose(0, 2, 3, 1))  # (B T, C, H, W) -> NHWC
    text = jnp.asarray(fixture["text"].transpose(1, 0, 2))  # (L, B, C) -> (B, L, C)
    return vis, text


def _bound(reference: np.ndarray, depth: int = 8) -> float:
    # Float32 rounding through a few matmuls, two softmax attentions and the norms: 64 eps x the output's magnitude x
    # the number of stacked reductions (derived from the magnitude, not tuned).
    return 64 * EPS32 * float(np.abs(reference).max()) * depth


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cmt_adapter_matches_the_official_code(fixture, mode):
    adapter = _adapter(fixture)
    vis, text = _inputs(fixture)
    vis_out, text_out = adapter(vis, text, clip_length=T, train=mode == "train")
    x_ref = fixture[f"x_{mode}"].transpose(0, 2, 3, 1)
    t_ref = fixture[f"t_{mode}"].transpose(1, 0, 2)
    np.testing.assert_allclose(np.asarray(vis_out), x_ref, atol=_bound(x_ref), rtol=0)
    np.testing.assert_allclose(np.asarray(text_out), t_ref, atol=_bound(t_ref), rtol=0)
    assert float(np.abs(x_ref).max()) > 0.5 and float(np.abs(t_ref).max()) > 0.5  # not a vacuous comparison
    if mode == "train":  # the running statistics advance as torch's (momentum 0.1, unbiased variance)
        for ours, key in ((adapter.proj_vis_down.bn, "proj_vis_down.1"), (adapter.proj_vis_up.bn, "proj_vis_up.1")):
            for name, theirs in (("mean", "running_mean"), ("var", "running_var")):
                ref = fixture[f"after/{key}.{theirs}"]
                np.testing.assert_allclose(np.asarray(getattr(ours, name)[...]), ref, atol=_bound(ref, 2), rtol=0)


def test_time_embedding_formula():
    emb = np.asarray(sine_time_embedding(4, 6))
    positions = np.arange(1, 5) / (4 + 1e-6) * 2 * np.pi
    freqs = 10000.0 ** (2 * (np.arange(6) // 2) / 6)
    expected = np.where(np.arange(6) % 2 == 0, np.sin(positions[:, None] / freqs), np.cos(positions[:, None] / freqs))
    np.testing.assert_allclose(emb, expected, atol=1e-6)


def test_frames_only_meet_through_hsa_and_the_clip_mean():
    # Without HSA, a frame's visual update depends on the other frames only through the text update's clip mean,
    # which it does not read: permuting frames within a clip permutes the visual output the same way.
    adapter = CMTAdapter(VIS, TXT, ADA, hsa_patch_size=P, use_hsa=False, rngs=nnx.Rngs(0))
    vis = jax.random.normal(jax.random.key(0), (T, 4, 4, VIS))
    text = jax.random.normal(jax.random.key(1), (1, 5, TXT))
    out, _ = adapter(vis, text, clip_length=T)
    order = jnp.asarray([2, 0, 1])
    permuted, _ = adapter(vis[order], text, clip_length=T)
    np.testing.assert_allclose(np.asarray(permuted), np.asarray(out)[np.asarray(order)], atol=1e-6)
    with_hsa = CMTAdapter(VIS, TXT, ADA, hsa_patch_size=P, rngs=nnx.Rngs(0))
    a, _ = with_hsa(vis, text, clip_length=T)
    b, _ = with_hsa(vis[order], text, clip_length=T)
    # HSA's time embedding makes the frame order matter: far above float32 rounding of outputs of this magnitude.
    assert float(jnp.abs(b - a[order]).max()) > 1000 * EPS32 * float(jnp.abs(a).max())


def test_bad_inputs_and_missing_keys_are_clear_errors(fixture):
    adapter = CMTAdapter(VIS, TXT, ADA, hsa_patch_size=P, rngs=nnx.Rngs(0))
    vis, text = _inputs(fixture)
    with pytest.raises(ValueError, match="whole number of clips"):
        adapter(vis[:5], text, clip_length=T)
    with pytest.raises(ValueError, match="text batch"):
        adapter(vis, text[:1], clip_length=T)
    with pytest.raises(ValueError, match="multiple of 2"):
        adapter(vis[:, :3, :3], text, clip_length=T)
    state = {k.removeprefix("state/"): v for k, v in fixture.items() if k.startswith("state/")}
    state.pop("adapter.hsa.linear.weight")
    state["adapter.extra.weight"] = np.zeros(3)
    with pytest.raises(ConversionError, match=r"hsa\.linear\.kernel[\s\S]*extra\.weight|extra\.weight[\s\S]*hsa"):
        convert_cmt_adapter(state, nnx.eval_shape(lambda: adapter), prefix="adapter.")


CME_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "samwise_cme.npz")


def test_conditional_memory_encoder_matches_the_official_code():
    from models.samwise import ConditionalMemoryEncoder, convert_cme

    with np.load(CME_FIXTURE) as data:
        fx = {k: data[k] for k in data.files}
    state = {k.removeprefix("state/"): v for k, v in fx.items() if k.startswith("state/")}
    assert any("norm2" in k for k in state)  # built but unused officially: loaded all the same
    cme = convert_cme(state, nnx.eval_shape(lambda: ConditionalMemoryEncoder(32, rngs=nnx.Rngs(0))), prefix="cme.")
    logits = np.asarray(cme(jnp.asarray(fx["zero"]), jnp.asarray(fx["two"])))
    np.testing.assert_allclose(logits, fx["logits"], atol=_bound(fx["logits"], 4), rtol=0)
    train_a = cme(jnp.asarray(fx["zero"]), jnp.asarray(fx["two"]), train=True, rngs=nnx.Rngs(dropout=0))
    train_b = cme(jnp.asarray(fx["zero"]), jnp.asarray(fx["two"]), train=True, rngs=nnx.Rngs(dropout=1))
    assert float(jnp.abs(train_a - train_b).max()) > 0  # dropout 0.1 acts in training
    with pytest.raises(ValueError, match="two \\(B, C\\) object pointers"):
        cme(jnp.zeros((3, 32)), jnp.zeros((2, 32)))


def test_trainable_parameter_count_of_b_plus():
    """Adapters after Hiera-B+ stages 2-4 (224 / 448 / 896 channels, HSA patches 8 / 4 / 2), the CME and
    project_text (a 3-layer MLP 768 -> 256 -> 256 -> 256): 5,235,906 trainable parameters (spec 1.5), via eval_shape."""
    from models.samwise import ConditionalMemoryEncoder, project_text

    def count(module):
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))

    adapters = [count(nnx.eval_shape(lambda c=c, p=p: CMTAdapter(c, 768, 256, hsa_patch_size=p, rngs=nnx.Rngs(0))))
                for c, p in ((224, 8), (448, 4), (896, 2))]
    assert adapters == [1_381_056, 1_483_904, 1_711_104]
    cme = count(nnx.eval_shape(lambda: ConditionalMemoryEncoder(256, rngs=nnx.Rngs(0))))
    assert cme == 331_394
    text = count(nnx.eval_shape(lambda: project_text(768, 256, rngs=nnx.Rngs(0))))
    assert text == 328_448
    assert sum(adapters) + cme + text == 5_235_906

