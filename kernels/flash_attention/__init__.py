"""Flash attention in Pallas: forward and backward kernels behind a `jax.custom_vjp`.

`attention_pallas` takes the zoo layout (q [batch, seq_q, heads, head_dim], k/v [batch, seq_k, heads, head_dim],
bias/mask broadcastable to [batch, heads, seq_q, seq_k]) and

- pads seq_q/seq_k to multiples of the blocks (padded keys are masked inside the kernels, padded queries sliced off)
  and head_dim to what the backend tiles (power of two for Triton, so 80 -> 128; untouched for Mosaic TPU, whose
  block may span the whole minor dim);
- keeps bias/mask dims of size 1 at size 1 (the kernels broadcast them), so a key-padding mask [batch, 1, 1, seq_k]
  or a relative-position bias [1, heads, seq_q, seq_k] is never expanded to [batch, heads, seq_q, seq_k];
- turns the boolean mask into an additive bf16 array of 0 / -inf (exact, and half the bytes of f32);
- computes d(bias) only when the bias is differentiated (`custom_vjp` with symbolic zeros tells us), reduced over
  the dims the bias was broadcast along.

Backends: GPU lowers through Triton (`pl.pallas_call` + `CompilerParams(num_warps, num_stages)`, tiles per dtype and
head_dim from `triton_tiles`), TPU through Mosaic (layout [batch, heads, seq, head_dim], the streamed kernels of
`_kernels.py`), CPU runs either formulation with `interpret=True` (`platform="tpu"` picks the TPU one). The Triton
kernels are compiled for sm_80 / sm_90 by `kernels.triton_compile` and the Mosaic ones for TPU v4-v6e by
`kernels.tpu_compile`, both on a CPU host.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from kernels.flash_attention._kernels import Plan, backward, forward

__all__ = ["TritonTiles", "attention_pallas", "default_blocks", "triton_tiles"]


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


class TritonTiles(NamedTuple):
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    warps: int
    warps_bwd: int
    stages: int = 2


# Triton tiles per (dtype kind, padded head_dim). Chosen so that every kernel compiles for sm_80 and sm_90 without
# register spills and within shared memory, read off `python -m kernels.triton_compile` (Triton 3.8 + ptxas on the
# CPU host; tables in benchmarks/README_attention.md). float32 dots run at "highest" precision (IEEE FMAs, no tensor
# cores), which needs far more registers per tile than bf16/f16 on the tensor cores, hence the smaller f32 tiles
# (and one pipeline stage at head_dim 256, where two spill even at 16 x 16). Not yet tuned for speed on hardware.
_TRITON_TILES = {
    ("half", 16): TritonTiles(128, 64, 64, 64, 8, 4),
    ("half", 32): TritonTiles(128, 64, 64, 64, 8, 4),
    ("half", 64): TritonTiles(128, 64, 64, 64, 8, 4),
    ("half", 128): TritonTiles(64, 64, 64, 64, 8, 8),
    ("half", 256): TritonTiles(64, 64, 32, 32, 8, 8),
    ("f32", 16): TritonTiles(64, 32, 32, 32, 4, 4),
    ("f32", 32): TritonTiles(64, 32, 32, 32, 4, 4),
    ("f32", 64): TritonTiles(64, 32, 32, 32, 8, 8),
    ("f32", 128): TritonTiles(32, 32, 16, 16, 8, 8),
    ("f32", 256): TritonTiles(32, 32, 16, 16, 8, 8, stages=1),
}


def triton_tiles(head_dim: int, dtype) -> TritonTiles:
    """Triton tiles, warps and pipeline stages for a padded head_dim (power of two >= 16) and dtype.

    Head dims above 256 reuse the 256 row (not checked for spills).
    """
    kind = "f32" if jnp.dtype(dtype) == jnp.float32 else "half"
    return _TRITON_TILES.get((kind, head_dim), _TRITON_TILES[(kind, 256)])


def default_blocks(platform: str, head_dim: int, dtype=jnp.bfloat16) -> tuple[int, int, int, int]:
    """(block_q, block_k, block_q_bwd, block_k_bwd) per backend; powers of two so that one padding fits all.

    GPU (Triton): per dtype and padded head_dim from `triton_tiles` (no register spills on sm_80 / sm_90);
    TPU (Mosaic): 128-multiples along the lane dim; CPU (interpret): large blocks, because every grid step and loop
    iteration is a step of a serial scan. None of these are tuned for speed on hardware yet.
    """
    if platform == "gpu":
        return tuple(triton_tiles(head_dim, dtype))[:4]
    if platform == "tpu":
        return 128, 128, 128, 128
    return 128, 128, 128, 128


def _fit_block(block: int, seq: int, min_block: int) -> int:
    """Shrinks a block to the (power-of-two rounded) sequence so short sequences are not padded to a full block."""
    if block <= 0 or block & (block - 1):
        raise ValueError(f"block sizes must be powers of two; got {block}")
    return max(min(block, _next_pow2(seq)), min_block)


def _make_plan(q, k, bias_shape, mask_shape, scale, platform, interpret, block_q, block_k) -> Plan:
    batch, seq_q, heads, head_dim = q.shape
    seq_k = k.shape[1]
    # Triton tiles must be powers of two (and dots at least 16 wide); Mosaic accepts a block spanning the full dim.
    head_dim_pad = head_dim if platform == "tpu" else max(16, _next_pow2(head_dim))
    # Triton dots need >= 16 rows/cols and bf16 Mosaic tiles are 16 sublanes; the interpreter takes any block.
    min_block = 8 if interpret else 16
    defaults = default_blocks(platform, head_dim_pad, q.dtype)
    tiles = triton_tiles(head_dim_pad, q.dtype)
    fwd_q = _fit_block(block_q or defaults[0], seq_q, min_block)
    fwd_k = _fit_block(block_k or defaults[1], seq_k, min_block)
    bwd_q = _fit_block(block_q or defaults[2], seq_q, min_block)
    bwd_k = _fit_block(block_k or defaults[3], seq_k, min_block)
    seq_q_pad = _round_up(seq_q, max(fwd_q, bwd_q))
    seq_k_pad = _round_up(seq_k, max(fwd_k, bwd_k))

    def pad_shape(shape):
        if shape is None:
            return None
        bb, bh, bq, bk = shape
        return (bb, bh, seq_q_pad if bq != 1 else 1, seq_k_pad if bk != 1 else 1)

    precision = lax.Precision.HIGHEST if jnp.dtype(q.dtype) == jnp.float32 else None
    return Plan(
        platform=platform,
        interpret=interpret,
        layout="bhsd" if platform == "tpu" else "bshd",
        scale=float(scale),
        batch=batch,
        heads=heads,
        seq_q=seq_q,
        seq_k=seq_k,
        seq_q_pad=seq_q_pad,
        seq_k_pad=seq_k_pad,
        head_dim_pad=head_dim_pad,
        block_q=fwd_q,
        block_k=fwd_k,
        block_q_bwd=bwd_q,
        block_k_bwd=bwd_k,
        bias_shape=pad_shape(bias_shape),
        mask_shape=pad_shape(mask_shape),
        precision=precision,
        num_warps=tiles.warps,
        num_warps_bwd=tiles.warps_bwd,
        num_stages=tiles.stages,
    )


# ------------------------------------------------------------------------------------------------------ custom_vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan: Plan, q, k, v, bias, mask):
    out, _ = forward(plan, q, k, v, bias, mask)
    return out


def _flash_fwd(plan: Plan, q, k, v, bias, mask):
    want_dbias = bias is not None and bias.perturbed
    q, k, v = q.value, k.value, v.value
    bias = None if bias is None else bias.value
    mask = None if mask is None else mask.value
    out, lse = forward(plan, q, k, v, bias, mask)
    return out, (q, k, v, bias, mask, out, lse, want_dbias)


def _flash_bwd(plan: Plan, residuals, do):
    q, k, v, bias, mask, out, lse, want_dbias = residuals
    if isinstance(do, jax.custom_derivatives.SymbolicZero):
        do = jnp.zeros(out.shape, out.dtype)
    dq, dk, dv, dbias_raw = backward(plan, q, k, v, bias, mask, out, lse, do.astype(out.dtype), want_dbias)
    dbias = None
    if want_dbias:
        bb, bh, bq, _ = plan.bias_shape
        reduce_axes = tuple(axis for axis, size in ((0, bb), (1, bh), (2, bq)) if size == 1)
        dbias = jnp.sum(dbias_raw, axis=reduce_axes, keepdims=True).astype(bias.dtype)
    return dq, dk, dv, dbias, None


_flash.defvjp(_flash_fwd, _flash_bwd, symbolic_zeros=True)


# ------------------------------------------------------------------------------------------------------ public API


def _canonical_extra(x, target, seq_q_pad, seq_k_pad, pad_value):
    """Rank-4 view of a bias/mask whose size-1 dims stay 1 and whose seq dims are padded to the kernel sizes."""
    x = jnp.reshape(x, (1,) * (4 - x.ndim) + tuple(x.shape))
    pads = [(0, 0), (0, 0), (0, 0), (0, 0)]
    if x.shape[2] != 1:
        pads[2] = (0, seq_q_pad - target[2])
    if x.shape[3] != 1:
        pads[3] = (0, seq_k_pad - target[3])
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, pads, constant_values=pad_value)
    return x


def attention_pallas(
    q,
    k,
    v,
    *,
    bias=None,
    mask=None,
    scale: float | None = None,
    interpret: bool | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    platform: str | None = None,
):
    """Flash attention (Pallas) in the zoo layout; same contract as `kernels.attention`.

    Args:
      q: [batch, seq_q, heads, head_dim]; k, v: [batch, seq_k, heads, head_dim]; float32/bfloat16/float16.
      bias: additive float array broadcastable to [batch, heads, seq_q, seq_k]; differentiable.
      mask: boolean array broadcastable to the same; True = may attend. Fully masked rows give zeros.
      scale: logit scale (Python float), default head_dim ** -0.5.
      interpret: run the kernels in Pallas interpret mode; default: True exactly when the backend is CPU.
      block_q, block_k: override the backend's block sizes (powers of two; used for forward and backward).
      platform: "gpu" or "tpu" to build the kernels for that backend instead of the default one (to lower/export
        for a machine that is not attached, e.g. `jax.export` with `platforms=["cuda"]`).
    """
    from kernels.attention import check_inputs

    check_inputs(q, k, v, bias, mask)
    dtype = jnp.result_type(q.dtype, k.dtype, v.dtype)
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    batch, seq_q, heads, head_dim = q.shape
    seq_k = k.shape[1]
    scale = head_dim**-0.5 if scale is None else float(scale)
    if platform is None:
        backend = jax.default_backend()
        platform = backend if backend in ("gpu", "tpu") else "cpu"
    elif platform not in ("gpu", "tpu", "cpu"):
        raise ValueError(f"platform must be 'gpu', 'tpu' or 'cpu'; got {platform!r}")
    if interpret is None:
        interpret = platform == "cpu"
    if platform == "cpu":
        # Interpret mode on CPU mimics the GPU tiling (power-of-two head_dim, [batch, seq, heads, head_dim] blocks).
        platform = "gpu"
    target = (batch, heads, seq_q, seq_k)

    def rank4(x):
        return None if x is None else (1,) * (4 - x.ndim) + tuple(x.shape)

    plan = _make_plan(q, k, rank4(bias), rank4(mask), scale, platform, interpret, block_q, block_k)
    if bias is not None:
        bias = _canonical_extra(bias, target, plan.seq_q_pad, plan.seq_k_pad, 0.0)
    if mask is not None:
        additive = jnp.where(mask, 0.0, -jnp.inf).astype(jnp.bfloat16)
        mask = _canonical_extra(additive, target, plan.seq_q_pad, plan.seq_k_pad, 0.0)

    def pad_seq(x, seq_pad):
        pads = [(0, 0), (0, seq_pad - x.shape[1]), (0, 0), (0, plan.head_dim_pad - head_dim)]
        x = jnp.pad(x, pads) if any(p != (0, 0) for p in pads) else x
        return jnp.swapaxes(x, 1, 2) if plan.layout == "bhsd" else x

    out = _flash(plan, pad_seq(q, plan.seq_q_pad), pad_seq(k, plan.seq_k_pad), pad_seq(v, plan.seq_k_pad), bias, mask)
    if plan.layout == "bhsd":
        out = jnp.swapaxes(out, 1, 2)
    return out[:, :seq_q, :, :head_dim]
