"""Attention kernels: Pallas (interpret mode on CPU) and the chunked XLA path vs the XLA path vs a naive softmax
written here.

Outputs and gradients wrt q, k, v and bias are compared over shapes the models use: relative-position biases broadcast
over batch, key-padding masks, cross attention with seq_k >> seq_q, lengths that are not multiples of the block,
head_dim 32/64/80/128, float32 and bfloat16. Small blocks (and key chunks) are passed so every case loops over several
blocks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention
from kernels.attention import (
    CHUNKED_MIN_KEYS,
    _group_size,
    attention_xla,
    attention_xla_chunked,
    attention_xla_grouped,
    use_chunked,
)
from kernels.flash_attention import attention_pallas


def naive_attention(q, k, v, bias=None, mask=None, scale=None):
    """Textbook softmax attention in f32; fully masked rows give 0."""
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision="highest") * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    allowed = jnp.ones(logits.shape, bool) if mask is None else jnp.broadcast_to(mask, logits.shape)
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(allowed, logits, -1e30), axis=-1, keepdims=True))
    unnormalised = jnp.where(allowed, jnp.exp(jnp.where(allowed, logits - shift, 0.0)), 0.0)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    probs = unnormalised / jnp.maximum(total, 1e-30)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision="highest")


def make_inputs(seed, batch, seq_q, seq_k, heads, head_dim, dtype, bias_shape, mask_shape, empty_row=False):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(batch, seq_q, heads, head_dim)), dtype)
    k = jnp.asarray(rng.normal(size=(batch, seq_k, heads, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(batch, seq_k, heads, head_dim)), dtype)
    bias = None if bias_shape is None else jnp.asarray(rng.normal(size=bias_shape), jnp.float32)
    mask = None
    if mask_shape is not None:
        mask = rng.random(mask_shape) > 0.3
        if empty_row:  # one query row (or one whole batch element) with no key to attend to
            mask[(0,) * (len(mask_shape) - 1)] = False
        mask = jnp.asarray(mask)
    cotangent = jnp.asarray(rng.normal(size=(batch, seq_q, heads, head_dim)), jnp.float32)
    return q, k, v, bias, mask, cotangent


def outputs_and_grads(fn, q, k, v, bias, mask, cotangent):
    """Output and d(sum(out * cotangent)) wrt q, k, v (and bias when there is one), jitted as one program."""

    @jax.jit
    def run(q, k, v, bias):
        def loss(q, k, v, bias):
            out = fn(q, k, v, bias=bias, mask=mask)
            return jnp.sum(out.astype(jnp.float32) * cotangent), out

        argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
        grads, out = jax.grad(loss, argnums=argnums, has_aux=True)(q, k, v, bias)
        return out, grads

    return run(q, k, v, bias)


# float32 results are compared against a bound derived from what each one sums, not a fixed atol: for every output
# element, the sum of the absolute values of the terms that produce it (and of the softmax terms upstream of it), in
# float64. A bias broadcast along keys has an exact gradient of 0 (softmax is shift-invariant): the kernel returns a
# cancellation of terms whose size is that magnitude, and its rounding depends on the machine's summation order.
# Measured on two CPUs: at most 6.5 eps x magnitude; the bound allows 32.
F32_ULPS = 32


def summed_magnitudes(q, k, v, bias, mask, cotangent):
    """Per element of out, dq, dk, dv, dbias: the float64 sum of |terms| that the attention and its VJP add up."""
    q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, cotangent))
    scale = q.shape[-1] ** -0.5
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    allowed = np.ones(logits.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), logits.shape)
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    unnormalised = np.where(allowed, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    probs = unnormalised / np.maximum(unnormalised.sum(-1, keepdims=True), 1e-300)
    dprobs = np.einsum("bqhd,bkhd->bhqk", np.abs(g), np.abs(v))  # |dP| terms
    dlogits = probs * (dprobs + np.sum(probs * dprobs, axis=-1, keepdims=True))  # dS = P (dP - rowsum(P dP))
    out = {
        "out": np.einsum("bhqk,bkhd->bqhd", probs, np.abs(v)),
        "dq": scale * np.einsum("bhqk,bkhd->bqhd", dlogits, np.abs(k)),
        "dk": scale * np.einsum("bhqk,bqhd->bkhd", dlogits, np.abs(q)),
        "dv": np.einsum("bhqk,bqhd->bkhd", probs, np.abs(g)),
    }
    if bias is not None:  # dbias sums dS over the axes the bias is broadcast along
        shape = (1,) * (4 - bias.ndim) + tuple(bias.shape)
        axes = tuple(i for i in range(4) if shape[i] == 1)
        out["dbias"] = dlogits.sum(axis=axes, keepdims=True).reshape(bias.shape)
    return out


def assert_within(got, want, bound, message):
    """|got - want| <= bound elementwise (bound: an array of the same shape)."""
    error = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), (
        f"{message}: error {error[worst]:.3g} > bound {bound[worst]:.3g} at {worst} (max error {error.max():.3g})"
    )


# (batch, seq_q, seq_k, heads, head_dim, bias_shape, mask_shape, block_q, block_k)
F32_CASES = {
    # ViT-like: 197 tokens (not a multiple of the block), relative-position bias over batch, key padding, hd 80.
    "vit197_relbias_keypad_hd80": (2, 197, 197, 2, 80, (1, 2, 197, 197), (2, 1, 1, 197), 64, 64),
    # Cross attention: 16 queries over 1030 keys, per-key bias broadcast over heads and queries, hd 32.
    "cross16x1030_keybias_hd32": (1, 16, 1030, 2, 32, (1, 1, 1, 1030), None, 16, 128),
    # Full-shape bias and a full-shape mask with an empty row, hd 64.
    "full_bias_full_mask_hd64": (2, 40, 72, 2, 64, (2, 2, 40, 72), (2, 2, 40, 72), 16, 32),
    # Rank-2 bias and causal-style rank-2 mask, bias broadcast along keys, hd 128.
    "rank2_bias_and_mask_hd128": (1, 24, 24, 2, 128, (24, 1), (24, 24), 8, 16),
}


# The Pallas kernels come in two formulations: "looped" (GPU / Triton, and CPU interpret by default: each program
# holds one outer block and loops over the other sequence) and "streamed" (TPU / Mosaic: a 4-D grid streams the other
# sequence through VMEM scratch accumulators). Interpret mode runs either; platform="tpu" selects the streamed one.
FORMULATIONS = {"looped": {}, "streamed": {"platform": "tpu"}}


@pytest.mark.parametrize("formulation", list(FORMULATIONS))
@pytest.mark.parametrize("case", list(F32_CASES))
def test_float32_matches_xla_and_naive(case, formulation):
    batch, seq_q, seq_k, heads, head_dim, bias_shape, mask_shape, block_q, block_k = F32_CASES[case]
    inputs = make_inputs(
        0, batch, seq_q, seq_k, heads, head_dim, jnp.float32, bias_shape, mask_shape, empty_row=mask_shape is not None
    )
    if case.startswith("rank2"):  # a causal mask: every row keeps at least its diagonal
        inputs = inputs[:4] + (jnp.tril(jnp.ones((seq_q, seq_k), bool)),) + inputs[5:]
    pallas = functools.partial(
        attention_pallas, interpret=True, block_q=block_q, block_k=block_k, **FORMULATIONS[formulation]
    )
    out_p, grads_p = outputs_and_grads(pallas, *inputs)
    out_x, grads_x = outputs_and_grads(attention_xla, *inputs)
    out_n, grads_n = outputs_and_grads(naive_attention, *inputs)
    magnitude = summed_magnitudes(*inputs)
    assert out_p.shape == (batch, seq_q, heads, head_dim) and out_p.dtype == jnp.float32
    for name, got_p, got_x, want in zip(
        ["out", "dq", "dk", "dv", "dbias"], [out_p, *grads_p], [out_x, *grads_x], [out_n, *grads_n]
    ):
        assert got_p.shape == want.shape, name
        assert not np.isnan(np.asarray(got_p)).any(), name
        bound = F32_ULPS * np.finfo(np.float32).eps * magnitude[name]
        assert_within(got_p, want, bound, f"pallas vs naive: {name}")
        assert_within(got_x, want, bound, f"xla vs naive: {name}")
        assert_within(got_p, got_x, 2 * bound, f"pallas vs xla: {name}")


BF16_CASES = {
    "vit197_relbias_keypad_hd64": (2, 197, 197, 2, 64, (1, 2, 197, 197), (2, 1, 1, 197), 64, 64),
    "cross64x1100_hd128": (1, 64, 1100, 2, 128, None, (1, 1, 1, 1100), 32, 128),
}


@pytest.mark.parametrize("formulation", list(FORMULATIONS))
@pytest.mark.parametrize("case", list(BF16_CASES))
def test_bfloat16_within_bf16_tolerance(case, formulation):
    batch, seq_q, seq_k, heads, head_dim, bias_shape, mask_shape, block_q, block_k = BF16_CASES[case]
    inputs = make_inputs(1, batch, seq_q, seq_k, heads, head_dim, jnp.bfloat16, bias_shape, mask_shape)
    pallas = functools.partial(
        attention_pallas, interpret=True, block_q=block_q, block_k=block_k, **FORMULATIONS[formulation]
    )
    out_p, grads_p = outputs_and_grads(pallas, *inputs)
    out_x, grads_x = outputs_and_grads(attention_xla, *inputs)
    # The reference sees the same bf16-rounded inputs, computed in f32.
    f32_inputs = tuple(x.astype(jnp.float32) for x in inputs[:3]) + inputs[3:]
    out_n, grads_n = outputs_and_grads(naive_attention, *f32_inputs)
    assert out_p.dtype == jnp.bfloat16 and grads_p[0].dtype == jnp.bfloat16
    for name, got_p, got_x, want in zip(
        ["out", "dq", "dk", "dv", "dbias"], [out_p, *grads_p], [out_x, *grads_x], [out_n, *grads_n]
    ):
        want = np.asarray(want, np.float32)
        scale = np.max(np.abs(want))
        for label, got in (("pallas", got_p), ("xla", got_x)):
            error = np.max(np.abs(np.asarray(got, np.float32) - want)) / scale
            assert error < 2e-2, f"{label} {name}: max error {error:.3g} relative to max |value|"


# Key chunks of the online-softmax XLA path per float32 case: several chunks, the last one partial (padded keys).
CHUNKS = {
    "vit197_relbias_keypad_hd80": 64,
    "cross16x1030_keybias_hd32": 128,
    "full_bias_full_mask_hd64": 32,
    "rank2_bias_and_mask_hd128": 10,
}


@pytest.mark.parametrize("case", list(F32_CASES))
def test_chunked_xla_matches_plain_xla_and_naive(case):
    """The online softmax over key chunks gives the plain path's output and gradients (q, k, v, bias) within the
    rounding of what they sum, with biases and masks broadcast along and across keys and fully masked rows."""
    batch, seq_q, seq_k, heads, head_dim, bias_shape, mask_shape, _, _ = F32_CASES[case]
    inputs = make_inputs(
        6, batch, seq_q, seq_k, heads, head_dim, jnp.float32, bias_shape, mask_shape, empty_row=mask_shape is not None
    )
    chunk = CHUNKS[case]
    assert seq_k > 2 * chunk and seq_k % chunk, "the case must loop over several chunks, the last one padded"
    chunked = functools.partial(attention_xla_chunked, key_chunk=chunk)
    out_c, grads_c = outputs_and_grads(chunked, *inputs)
    out_x, grads_x = outputs_and_grads(attention_xla, *inputs)
    out_n, grads_n = outputs_and_grads(naive_attention, *inputs)
    magnitude = summed_magnitudes(*inputs)
    assert out_c.shape == (batch, seq_q, heads, head_dim) and out_c.dtype == jnp.float32
    for name, got_c, got_x, want in zip(
        ["out", "dq", "dk", "dv", "dbias"], [out_c, *grads_c], [out_x, *grads_x], [out_n, *grads_n]
    ):
        assert got_c.shape == want.shape, name
        assert np.isfinite(np.asarray(got_c)).all(), name
        bound = F32_ULPS * np.finfo(np.float32).eps * magnitude[name]
        assert_within(got_c, want, bound, f"chunked vs naive: {name}")
        assert_within(got_c, got_x, 2 * bound, f"chunked vs plain xla: {name}")


def test_chunked_xla_bfloat16_and_key_mask_only():
    """bf16 inputs (bf16 probabilities into the PV product, f32 accumulation) and a [B, Nk] key mask broadcast
    over heads and queries, as SAM2's memory attention passes; compared with the f32 naive result."""
    inputs = make_inputs(7, 2, 64, 1100, 2, 64, jnp.bfloat16, None, (2, 1, 1, 1100))
    chunked = functools.partial(attention_xla_chunked, key_chunk=128)
    out_c, grads_c = outputs_and_grads(chunked, *inputs)
    out_x, grads_x = outputs_and_grads(attention_xla, *inputs)
    f32_inputs = tuple(x.astype(jnp.float32) for x in inputs[:3]) + inputs[3:]
    out_n, grads_n = outputs_and_grads(naive_attention, *f32_inputs)
    assert out_c.dtype == jnp.bfloat16 and grads_c[0].dtype == jnp.bfloat16
    for name, got_c, got_x, want in zip(
        ["out", "dq", "dk", "dv"], [out_c, *grads_c], [out_x, *grads_x], [out_n, *grads_n]
    ):
        want = np.asarray(want, np.float32)
        scale = np.max(np.abs(want))
        for label, got in (("chunked", got_c), ("plain", got_x)):
            error = np.max(np.abs(np.asarray(got, np.float32) - want)) / scale
            assert error < 2e-2, f"{label} {name}: max error {error:.3g} relative to max |value|"


# Logits per group of the grouped XLA path per float32 case: several groups of (batch, head) pairs each.
GROUPS = {name: case[1] * case[2] for name, case in F32_CASES.items()}  # one pair per group


@pytest.mark.parametrize("case", list(F32_CASES))
def test_grouped_xla_matches_plain_xla_and_naive(case):
    """The plain computation one group of (batch, head) pairs at a time, normalised after the PV product: the plain
    path's output and gradients (q, k, v, bias) within the rounding of what they sum, with biases and masks broadcast
    over batch, heads, queries or keys and fully masked rows."""
    batch, seq_q, seq_k, heads, head_dim, bias_shape, mask_shape, _, _ = F32_CASES[case]
    inputs = make_inputs(
        9, batch, seq_q, seq_k, heads, head_dim, jnp.float32, bias_shape, mask_shape, empty_row=mask_shape is not None
    )
    assert batch * heads // _group_size(batch * heads, seq_q * seq_k, GROUPS[case]) > 1, "several groups"
    grouped = functools.partial(attention_xla_grouped, group_logits=GROUPS[case])
    out_g, grads_g = outputs_and_grads(grouped, *inputs)
    out_x, grads_x = outputs_and_grads(attention_xla, *inputs)
    out_n, grads_n = outputs_and_grads(naive_attention, *inputs)
    magnitude = summed_magnitudes(*inputs)
    assert out_g.shape == (batch, seq_q, heads, head_dim) and out_g.dtype == jnp.float32
    for name, got_g, got_x, want in zip(
        ["out", "dq", "dk", "dv", "dbias"], [out_g, *grads_g], [out_x, *grads_x], [out_n, *grads_n]
    ):
        assert got_g.shape == want.shape, name
        assert np.isfinite(np.asarray(got_g)).all(), name
        bound = F32_ULPS * np.finfo(np.float32).eps * magnitude[name]
        assert_within(got_g, want, bound, f"grouped vs naive: {name}")
        assert_within(got_g, got_x, 2 * bound, f"grouped vs plain xla: {name}")


def test_grouped_xla_bfloat16_one_group_and_sizes():
    """bf16 inputs in one group (no loop) and in several; the group size divides the pairs and respects the budget."""
    inputs = make_inputs(10, 2, 64, 100, 3, 64, jnp.bfloat16, None, (2, 1, 1, 100))
    f32_inputs = tuple(x.astype(jnp.float32) for x in inputs[:3]) + inputs[3:]
    out_n, grads_n = outputs_and_grads(naive_attention, *f32_inputs)
    for group_logits in (1 << 30, 64 * 100):
        out_g, grads_g = outputs_and_grads(functools.partial(attention_xla_grouped, group_logits=group_logits),
                                           *inputs)
        assert out_g.dtype == jnp.bfloat16 and grads_g[0].dtype == jnp.bfloat16
        for name, got, want in zip(["out", "dq", "dk", "dv"], [out_g, *grads_g], [out_n, *grads_n]):
            want = np.asarray(want, np.float32)
            error = np.max(np.abs(np.asarray(got, np.float32) - want)) / np.max(np.abs(want))
            assert error < 2e-2, f"grouped ({group_logits}) {name}: max error {error:.3g} relative to max |value|"
    assert _group_size(6, 100, 1 << 30) == 6 and _group_size(6, 100, 400) == 3 and _group_size(7, 100, 300) == 1
    assert _group_size(16, 10, 0) == 1
    with pytest.raises(ValueError, match="group_logits"):
        attention_xla_grouped(*inputs[:3], group_logits=0)


def test_auto_on_cpu_streams_long_keys_only():
    """impl="auto" on CPU: the chunked path for long key sequences, the plain one for short ones (or few queries)."""
    assert not use_chunked(1024, CHUNKED_MIN_KEYS - 1) and not use_chunked(8, 4 * CHUNKED_MIN_KEYS)
    assert use_chunked(1024, CHUNKED_MIN_KEYS)
    q, k, v, _, mask, _ = make_inputs(
        8, 1, 1024, CHUNKED_MIN_KEYS + 100, 1, 16, jnp.float32, None, (1, 1, 1, CHUNKED_MIN_KEYS + 100)
    )
    auto = attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(auto, attention_xla_chunked(q, k, v, mask=mask))
    np.testing.assert_array_equal(attention(q, k, v, mask=mask, impl="xla_chunked"), auto)
    plain = attention_xla(q, k, v, mask=mask)
    bound = (
        F32_ULPS
        * np.finfo(np.float32).eps
        * np.einsum(
            "bhqk,bkhd->bqhd",
            np.asarray(
                jax.nn.softmax(jnp.where(mask, jnp.einsum("bqhd,bkhd->bhqk", q, k) / 4.0, -jnp.inf), axis=-1),
                np.float64,
            ),
            np.abs(v),
        )
    )
    assert_within(auto, plain, 2 * bound, "auto (chunked) vs plain")


@pytest.mark.parametrize("impl", ["pallas", "pallas-streamed", "xla", "xla_chunked", "xla_grouped"])
def test_fully_masked_rows_give_zeros_and_finite_grads(impl):
    q, k, v, bias, _, cotangent = make_inputs(2, 2, 20, 36, 2, 32, jnp.float32, (1, 2, 20, 36), None)
    mask = np.ones((2, 1, 20, 36), bool)
    mask[0, 0, 3] = False  # one empty query row
    mask[1] = False  # a whole batch element with nothing to attend to
    mask = jnp.asarray(mask)
    fn = functools.partial(attention, impl=impl)
    if impl == "xla_chunked":  # 36 keys in chunks of 16: the empty rows stay empty through several chunks
        fn = functools.partial(attention_xla_chunked, key_chunk=16)
    if impl == "xla_grouped":  # one (batch, head) pair per group: the empty batch element is whole groups
        fn = functools.partial(attention_xla_grouped, group_logits=20 * 36)
    if impl.startswith("pallas"):
        extra = FORMULATIONS["streamed"] if impl.endswith("streamed") else {}
        fn = functools.partial(attention_pallas, interpret=True, block_q=8, block_k=16, **extra)
    out, grads = outputs_and_grads(fn, q, k, v, bias, mask, cotangent)
    for x in (out, *grads):
        assert np.isfinite(np.asarray(x)).all()
    assert np.all(np.asarray(out[0, 3]) == 0) and np.all(np.asarray(out[1]) == 0)
    dq, dk, dv, _ = grads
    assert np.all(np.asarray(dq[1]) == 0) and np.all(np.asarray(dk[1]) == 0) and np.all(np.asarray(dv[1]) == 0)
    out_n, grads_n = outputs_and_grads(naive_attention, q, k, v, bias, mask, cotangent)
    magnitude = summed_magnitudes(q, k, v, bias, mask, cotangent)
    for name, got, want in zip(["out", "dq", "dk", "dv", "dbias"], (out, *grads), (out_n, *grads_n)):
        assert_within(got, want, F32_ULPS * np.finfo(np.float32).eps * magnitude[name], f"{impl}: {name}")


def test_bias_with_minus_inf_entries_matches_mask():
    """A -inf additive bias (a common way to mask) behaves like the boolean mask, empty rows included."""
    q, k, v, _, mask, _ = make_inputs(3, 1, 16, 24, 2, 32, jnp.float32, None, (1, 2, 16, 24), True)
    bias = jnp.where(mask, 0.0, -jnp.inf)
    out_bias = attention_pallas(q, k, v, bias=bias, interpret=True, block_q=8, block_k=8)
    out_mask = attention_pallas(q, k, v, mask=mask, interpret=True, block_q=8, block_k=8)
    np.testing.assert_allclose(out_bias, out_mask, atol=1e-6)
    assert np.isfinite(np.asarray(out_bias)).all()


def test_dispatcher_uses_xla_on_cpu_and_pallas_on_request():
    q, k, v, bias, mask, _ = make_inputs(4, 1, 12, 12, 2, 32, jnp.float32, (1, 2, 12, 12), (1, 1, 1, 12))
    auto = attention(q, k, v, bias=bias, mask=mask)
    np.testing.assert_array_equal(auto, attention_xla_grouped(q, k, v, bias=bias, mask=mask))
    np.testing.assert_array_equal(attention(q, k, v, bias=bias, mask=mask, impl="xla_grouped"), auto)
    np.testing.assert_array_equal(attention(q, k, v, bias=bias, mask=mask, impl="xla"),
                                  attention_xla(q, k, v, bias=bias, mask=mask))
    pallas = attention(q, k, v, bias=bias, mask=mask, impl="pallas")
    np.testing.assert_allclose(pallas, auto, atol=1e-5)


def _two_layer_block(params, x, impl):
    """Two pre-norm transformer layers (attention with a relative-position bias + MLP), plain jnp."""
    batch, tokens, width = x.shape
    heads = 2
    for layer in params:
        h = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
        qkv = (h @ layer["qkv"]).reshape(batch, tokens, 3, heads, width // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attended = attention(q, k, v, bias=layer["rel_bias"], impl=impl).reshape(batch, tokens, width)
        x = x + attended @ layer["proj"]
        h = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = x + jax.nn.gelu(h @ layer["fc1"], approximate=False) @ layer["fc2"]
    return x


def test_two_layer_block_same_with_pallas_and_xla():
    rng = np.random.default_rng(5)
    width, tokens = 64, 50

    def weight(*shape):
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), jnp.float32)

    params = [
        {
            "qkv": weight(width, 3 * width),
            "proj": weight(width, width),
            "fc1": weight(width, 2 * width),
            "fc2": weight(2 * width, width),
            "rel_bias": weight(1, 2, tokens, tokens),
        }
        for _ in range(2)
    ]
    x = jnp.asarray(rng.normal(size=(2, tokens, width)), jnp.float32)

    def loss(params, x, impl):
        return jnp.mean(_two_layer_block(params, x, impl) ** 2)

    out_x = _two_layer_block(params, x, "xla")
    out_p = _two_layer_block(params, x, "pallas")
    np.testing.assert_allclose(out_p, out_x, atol=1e-5, rtol=1e-5)
    grads_x = jax.grad(loss)(params, x, "xla")
    grads_p = jax.grad(loss)(params, x, "pallas")
    for gx, gp in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_p)):
        np.testing.assert_allclose(gp, gx, atol=1e-5, rtol=1e-4)


def _qkv(shape_q=(1, 8, 2, 16), shape_k=(1, 8, 2, 16), dtype=jnp.float32):
    return jnp.zeros(shape_q, dtype), jnp.zeros(shape_k, dtype), jnp.zeros(shape_k, dtype)


@pytest.mark.parametrize("impl", ["pallas", "xla", "xla_chunked", "xla_grouped"])
def test_bad_inputs_raise_clear_errors(impl):
    run = functools.partial(attention, impl=impl)
    with pytest.raises(ValueError, match="rank 4"):
        run(jnp.zeros((8, 2, 16)), jnp.zeros((8, 2, 16)), jnp.zeros((8, 2, 16)))
    with pytest.raises(ValueError, match="must agree on batch, heads and head_dim"):
        run(*_qkv(shape_k=(1, 8, 3, 16)))  # heads differ
    with pytest.raises(ValueError, match="must agree on batch, heads and head_dim"):
        run(*_qkv(shape_k=(1, 8, 2, 32)))  # head_dim differs
    q, k, _ = _qkv()
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        run(q, k, jnp.zeros((1, 9, 2, 16)))
    with pytest.raises(ValueError, match=r"bias of shape \(1, 3, 8, 8\) does not broadcast"):
        run(*_qkv(), bias=jnp.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="mask of shape .* does not broadcast"):
        run(*_qkv(), mask=jnp.ones((1, 1, 8, 9), bool))
    with pytest.raises(TypeError, match="float32, bfloat16 and float16"):
        run(*_qkv(dtype=jnp.int32))
    with pytest.raises(TypeError, match="mask must be boolean"):
        run(*_qkv(), mask=jnp.ones((8, 8), jnp.int32))
    with pytest.raises(TypeError, match="bias must be a floating-point"):
        run(*_qkv(), bias=jnp.ones((8, 8), jnp.int32))


def test_bad_impl_and_block_sizes():
    with pytest.raises(ValueError, match="impl must be"):
        attention(*_qkv(), impl="cuda")
    with pytest.raises(ValueError, match="powers of two"):
        attention_pallas(*_qkv(), interpret=True, block_q=24)
    with pytest.raises(ValueError, match="key_chunk must be a positive"):
        attention_xla_chunked(*_qkv(), key_chunk=0)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_gpu_and_tpu_kernels_lower_without_the_device(platform):
    """Pallas -> Triton (GPU) and Pallas -> Mosaic (TPU) lowering of forward and backward runs on the CPU host.

    This checks block shapes, layouts and the kernel bodies against the backend lowering rules; the final Triton /
    Mosaic compilation needs the device and is not covered here.
    """
    from jax import export

    shapes = (jax.ShapeDtypeStruct((2, 197, 2, 80), jnp.bfloat16), jax.ShapeDtypeStruct((2, 1030, 2, 80), jnp.bfloat16))
    bias = jax.ShapeDtypeStruct((1, 2, 197, 1030), jnp.float32)
    mask = jax.ShapeDtypeStruct((2, 1, 1, 1030), jnp.bool_)

    def loss(q, k, v, bias, mask):
        out = attention_pallas(q, k, v, bias=bias, mask=mask, interpret=False, platform=platform)
        return jnp.sum(out.astype(jnp.float32))

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    exported = export.export(
        grad_fn,
        platforms=["cuda" if platform == "gpu" else "tpu"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(shapes[0], shapes[1], shapes[1], bias, mask)
    module = exported.mlir_module()
    target = "__gpu$xla.gpu.triton" if platform == "gpu" else "tpu_custom_call"
    assert module.count(f"@{target}") >= 3  # forward, dK/dV and dQ/dbias kernels
