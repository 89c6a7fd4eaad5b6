"""Pallas kernel bodies and `pallas_call` builders of flash attention (forward, dK/dV, dQ/dbias).

Every kernel sees 2-D refs [seq, head_dim] (the batch and head grid axes are squeezed by the BlockSpecs) and never
holds more than a [block_q, block_k] tile of scores. Two formulations share the tile math (`_scores`,
`_probs_and_dscores`, the online-softmax update):
- looped (GPU / Triton, and CPU interpret): a program holds one block of the "outer" sequence and loops with
  `lax.fori_loop` over blocks of the other, read from whole-sequence refs (pointers into HBM under Triton);
- streamed (TPU / Mosaic, where every block is copied into VMEM): a 4-D grid whose innermost "arbitrary" axis
  visits one tile per step and keeps the running statistics / gradient sums in VMEM scratch, so VMEM use does not
  grow with the sequence.
Arrays arrive padded: seq_q and seq_k to multiples of the blocks, head_dim to what the backend needs; padded keys are
masked here with an iota test against the true seq_k.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static description of one attention call: shapes, blocks, backend and how bias/mask broadcast."""

    platform: str  # "gpu", "tpu" or "cpu" (interpret)
    interpret: bool
    layout: str  # "bshd" (GPU, interpret: no transposes) or "bhsd" (TPU: seq and head_dim are the tiled dims)
    scale: float
    batch: int
    heads: int
    seq_q: int  # true lengths
    seq_k: int
    seq_q_pad: int
    seq_k_pad: int
    head_dim_pad: int
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    bias_shape: tuple[int, int, int, int] | None  # canonical rank-4 shape after padding (1 = broadcast dim)
    mask_shape: tuple[int, int, int, int] | None
    precision: lax.Precision | None
    num_warps: int = 4  # Triton warps of the forward kernel
    num_warps_bwd: int = 4  # ... and of the two backward kernels
    num_stages: int = 2


# ----------------------------------------------------------------------------------------------------------- specs


def _seq_spec(plan: Plan, block: int, seq_block_index):
    """BlockSpec over a q/k/v/o-like array, blocked along seq by `block`; grid is (batch, head, outer block)."""
    if plan.layout == "bshd":
        return pl.BlockSpec((None, block, None, plan.head_dim_pad), lambda b, h, i: (b, seq_block_index(i), h, 0))
    return pl.BlockSpec((None, None, block, plan.head_dim_pad), lambda b, h, i: (b, h, seq_block_index(i), 0))


def _stat_spec(block: int, seq_block_index):
    """BlockSpec over a [batch, heads, seq_q_pad, 1] f32 row statistic (lse, delta)."""
    return pl.BlockSpec((None, None, block, 1), lambda b, h, i: (b, h, seq_block_index(i), 0))


def _extra_spec(shape, block_q: int | None, block_k: int | None):
    """BlockSpec over a bias/mask array of canonical shape (bB, bH, bQ, bK); size-1 dims broadcast.

    `block_q`/`block_k` None means the whole (padded) dim in one block, otherwise blocks indexed by the grid's third
    axis along that dim.
    """
    bb, bh, bq, bk = shape
    q_blk = 1 if bq == 1 else (bq if block_q is None else block_q)
    k_blk = 1 if bk == 1 else (bk if block_k is None else block_k)
    q_indexed = bq != 1 and block_q is not None
    k_indexed = bk != 1 and block_k is not None

    def index_map(b, h, i):
        return (b if bb != 1 else 0, h if bh != 1 else 0, i if q_indexed else 0, i if k_indexed else 0)

    return pl.BlockSpec((None, None, q_blk, k_blk), index_map)


def _compiler_params(plan: Plan, backward: bool):
    if plan.interpret:
        return None
    if plan.platform == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        # (batch, head, outer block) cells are independent; the innermost axis streams the other sequence through
        # VMEM scratch accumulators, so it runs in order on one core.
        return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))
    from jax.experimental.pallas import triton as pltriton

    warps = plan.num_warps_bwd if backward else plan.num_warps
    return pltriton.CompilerParams(num_warps=warps, num_stages=plan.num_stages)


def _call(plan: Plan, kernel, *, grid, in_specs, out_specs, out_shape, name, scratch_shapes=()):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=scratch_shapes,
        compiler_params=_compiler_params(plan, backward=name != "flash_attention_forward"),
        interpret=plan.interpret,
        name=name,
    )


def _vmem(shape):
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.VMEM(shape, jnp.float32)


# ------------------------------------------------------------------------------------------------- shared pieces


def _scores(plan: Plan, q, k, bias_tile, mask_tile, k_start, block_k):
    """Scaled, biased, masked f32 scores of a [block_q, block_k] tile; padded keys get -inf."""
    s = pl.dot(q, k, trans_b=True, precision=plan.precision) * plan.scale
    if bias_tile is not None:
        s = s + bias_tile.astype(jnp.float32)
    if mask_tile is not None:
        s = s + mask_tile.astype(jnp.float32)  # 0 where allowed, -inf where masked
    if plan.seq_k != plan.seq_k_pad:
        key_index = k_start + lax.broadcasted_iota(jnp.int32, s.shape, 1)
        s = jnp.where(key_index < plan.seq_k, s, -jnp.inf)
    return s


def _row_tile(ref, k_start, block_k):
    """[rows, block_k] (or broadcastable) slice of a bias/mask block that spans all keys."""
    if ref is None:
        return None
    if ref.shape[-1] == 1:
        return ref[...]
    return ref[:, pl.ds(k_start, block_k)]


def _col_tile(ref, q_start, block_q):
    """[block_q, cols] (or broadcastable) slice of a bias/mask block that spans all queries."""
    if ref is None:
        return None
    if ref.shape[0] == 1:
        return ref[...]
    return ref[pl.ds(q_start, block_q), :]


def _dot_tn(plan: Plan, a, b):
    """a^T b with f32 accumulation; Mosaic gets an explicit transpose (as the shipped TPU kernels do)."""
    if plan.platform == "tpu":
        return pl.dot(a.T, b, precision=plan.precision)
    return pl.dot(a, b, trans_a=True, precision=plan.precision)


def _split_refs(refs, has_bias, has_mask, n_leading):
    refs = list(refs)
    leading, rest = refs[:n_leading], refs[n_leading:]
    bias_ref = rest.pop(0) if has_bias else None
    mask_ref = rest.pop(0) if has_mask else None
    return leading, bias_ref, mask_ref, rest


def _online_softmax_step(plan: Plan, s, v, acc, m_prev, l_prev):
    """Folds one [block_q, block_k] score tile into the running (acc, max, sum); fully masked rows stay finite."""
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    shift = jnp.where(m_next == -jnp.inf, 0.0, m_next)
    correction = jnp.exp(m_prev - shift)
    p = jnp.exp(s - shift)
    l_next = correction * l_prev + jnp.sum(p, axis=1, keepdims=True)
    acc = correction * acc + pl.dot(p.astype(v.dtype), v, precision=plan.precision)
    return acc, m_next, l_next


def _write_output(o_ref, lse_ref, acc, m, l):
    """out = acc / l and lse = m + log(l); rows with nothing to attend to get 0 and lse = +inf."""
    empty = l == 0.0
    o_ref[...] = (acc / jnp.where(empty, 1.0, l)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))


# ------------------------------------------------------------------------------------------------------- forward


def _forward_kernel(*refs, plan: Plan, has_bias: bool, has_mask: bool):
    (q_ref, k_ref, v_ref), bias_ref, mask_ref, (o_ref, lse_ref) = _split_refs(refs, has_bias, has_mask, 3)
    block_k = plan.block_k
    q = q_ref[...]
    block_q = q.shape[0]

    def body(j, carry):
        acc, m_prev, l_prev = carry
        k_start = pl.multiple_of(j * block_k, block_k)
        k = k_ref[pl.ds(k_start, block_k), :]
        v = v_ref[pl.ds(k_start, block_k), :]
        s = _scores(
            plan, q, k, _row_tile(bias_ref, k_start, block_k), _row_tile(mask_ref, k_start, block_k), k_start, block_k
        )
        return _online_softmax_step(plan, s, v, acc, m_prev, l_prev)

    acc = jnp.zeros((block_q, plan.head_dim_pad), jnp.float32)
    m = jnp.full((block_q, 1), -jnp.inf, jnp.float32)
    l = jnp.zeros((block_q, 1), jnp.float32)
    acc, m, l = lax.fori_loop(0, plan.seq_k_pad // block_k, body, (acc, m, l))
    _write_output(o_ref, lse_ref, acc, m, l)


def forward(plan: Plan, q, k, v, bias, mask):
    """Returns (out, lse) with out like q and lse [batch, heads, seq_q_pad, 1] f32."""
    if plan.platform == "tpu":
        return _forward_streamed(plan, q, k, v, bias, mask)
    block_q = plan.block_q
    full_k = plan.seq_k_pad
    in_specs = [
        _seq_spec(plan, block_q, lambda i: i),
        _seq_spec(plan, full_k, lambda i: 0),
        _seq_spec(plan, full_k, lambda i: 0),
    ]
    args = [q, k, v]
    for extra, shape in ((bias, plan.bias_shape), (mask, plan.mask_shape)):
        if extra is not None:
            in_specs.append(_extra_spec(shape, block_q, None))
            args.append(extra)
    kernel = functools.partial(_forward_kernel, plan=plan, has_bias=bias is not None, has_mask=mask is not None)
    return _call(
        plan,
        kernel,
        grid=(plan.batch, plan.heads, plan.seq_q_pad // block_q),
        in_specs=in_specs,
        out_specs=[_seq_spec(plan, block_q, lambda i: i), _stat_spec(block_q, lambda i: i)],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((plan.batch, plan.heads, plan.seq_q_pad, 1), jnp.float32),
        ],
        name="flash_attention_forward",
    )(*args)


# ------------------------------------------------------------------------------------------------------ backward


def _probs_and_dscores(plan, q, k, v, do, lse, delta, bias_tile, mask_tile, k_start, block_k):
    """Recomputes the probabilities of a tile and the gradient wrt its (pre-scale-free) scores."""
    s = _scores(plan, q, k, bias_tile, mask_tile, k_start, block_k)
    p = jnp.exp(s - lse)  # lse = +inf on fully masked rows, so p = 0 there (never inf - inf)
    dp = pl.dot(do, v, trans_b=True, precision=plan.precision)
    ds = p * (dp - delta)
    return p, ds


def _dkv_kernel(*refs, plan: Plan, has_bias: bool, has_mask: bool):
    leading, bias_ref, mask_ref, (dk_ref, dv_ref) = _split_refs(refs, has_bias, has_mask, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = leading
    block_q = plan.block_q_bwd
    k = k_ref[...]
    v = v_ref[...]
    block_k = k.shape[0]
    k_start = pl.program_id(2) * block_k

    def body(i, carry):
        dk, dv = carry
        q_start = pl.multiple_of(i * block_q, block_q)
        rows = pl.ds(q_start, block_q)
        q = q_ref[rows, :]
        do = do_ref[rows, :]
        p, ds = _probs_and_dscores(
            plan,
            q,
            k,
            v,
            do,
            lse_ref[rows, :],
            delta_ref[rows, :],
            _col_tile(bias_ref, q_start, block_q),
            _col_tile(mask_ref, q_start, block_q),
            k_start,
            block_k,
        )
        dv = dv + _dot_tn(plan, p.astype(do.dtype), do)
        dk = dk + _dot_tn(plan, ds.astype(q.dtype), q)
        return dk, dv

    zeros = jnp.zeros((block_k, plan.head_dim_pad), jnp.float32)
    dk, dv = lax.fori_loop(0, plan.seq_q_pad // block_q, body, (zeros, zeros))
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, plan: Plan, has_bias: bool, has_mask: bool, want_dbias: bool):
    leading, bias_ref, mask_ref, outs = _split_refs(refs, has_bias, has_mask, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = leading
    dq_ref = outs[0]
    dbias_ref = outs[1] if want_dbias else None
    block_k = plan.block_k_bwd
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    block_q = q.shape[0]
    # A bias broadcast along keys gets one gradient column per query row, accumulated over the key loop.
    dbias_keys_full = want_dbias and dbias_ref.shape[-1] != 1
    dbias_rows_full = want_dbias and dbias_ref.shape[0] != 1

    def body(j, carry):
        dq, dbias_acc = carry
        k_start = pl.multiple_of(j * block_k, block_k)
        k = k_ref[pl.ds(k_start, block_k), :]
        v = v_ref[pl.ds(k_start, block_k), :]
        _, ds = _probs_and_dscores(
            plan,
            q,
            k,
            v,
            do,
            lse,
            delta,
            _row_tile(bias_ref, k_start, block_k),
            _row_tile(mask_ref, k_start, block_k),
            k_start,
            block_k,
        )
        dq = dq + pl.dot(ds.astype(k.dtype), k, precision=plan.precision)
        if want_dbias:
            tile = ds if dbias_rows_full else jnp.sum(ds, axis=0, keepdims=True)
            if dbias_keys_full:
                dbias_ref[:, pl.ds(k_start, block_k)] = tile.astype(dbias_ref.dtype)
            else:
                dbias_acc = dbias_acc + jnp.sum(tile, axis=1, keepdims=True)
        return dq, dbias_acc

    dq = jnp.zeros((block_q, plan.head_dim_pad), jnp.float32)
    dbias_acc = jnp.zeros((block_q if dbias_rows_full else 1, 1), jnp.float32)
    dq, dbias_acc = lax.fori_loop(0, plan.seq_k_pad // block_k, body, (dq, dbias_acc))
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)
    if want_dbias and not dbias_keys_full:
        dbias_ref[...] = dbias_acc.astype(dbias_ref.dtype)


def backward(plan: Plan, q, k, v, bias, mask, out, lse, do, want_dbias: bool):
    """Returns (dq, dk, dv, dbias_raw); dbias_raw is [batch, heads, rows, cols] f32 or None, where rows is
    seq_q_pad (or the number of q blocks if the bias broadcasts over queries) and cols is seq_k_pad or 1."""
    axes = "bqhd" if plan.layout == "bshd" else "bhqd"
    delta = jnp.einsum(f"{axes},{axes}->bhq", out.astype(jnp.float32), do.astype(jnp.float32))[..., None]
    if plan.platform == "tpu":
        return _backward_streamed(plan, q, k, v, bias, mask, lse, delta, do, want_dbias)
    has_bias, has_mask = bias is not None, mask is not None
    extras = [x for x in (bias, mask) if x is not None]
    extra_shapes = [s for x, s in ((bias, plan.bias_shape), (mask, plan.mask_shape)) if x is not None]
    full_q, full_k = plan.seq_q_pad, plan.seq_k_pad
    bq, bk = plan.block_q_bwd, plan.block_k_bwd

    dkv_in_specs = [
        _seq_spec(plan, full_q, lambda i: 0),
        _seq_spec(plan, bk, lambda i: i),
        _seq_spec(plan, bk, lambda i: i),
        _seq_spec(plan, full_q, lambda i: 0),
        _stat_spec(full_q, lambda i: 0),
        _stat_spec(full_q, lambda i: 0),
    ] + [_extra_spec(s, None, bk) for s in extra_shapes]
    dk, dv = _call(
        plan,
        functools.partial(_dkv_kernel, plan=plan, has_bias=has_bias, has_mask=has_mask),
        grid=(plan.batch, plan.heads, full_k // bk),
        in_specs=dkv_in_specs,
        out_specs=[_seq_spec(plan, bk, lambda i: i), _seq_spec(plan, bk, lambda i: i)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name="flash_attention_dkv",
    )(q, k, v, do, lse, delta, *extras)

    dq_in_specs = [
        _seq_spec(plan, bq, lambda i: i),
        _seq_spec(plan, full_k, lambda i: 0),
        _seq_spec(plan, full_k, lambda i: 0),
        _seq_spec(plan, bq, lambda i: i),
        _stat_spec(bq, lambda i: i),
        _stat_spec(bq, lambda i: i),
    ] + [_extra_spec(s, bq, None) for s in extra_shapes]
    out_specs = [_seq_spec(plan, bq, lambda i: i)]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    if want_dbias:
        _, _, bias_q, bias_k = plan.bias_shape
        rows_full, keys_full = bias_q != 1, bias_k != 1
        dbias_shape = (plan.batch, plan.heads, full_q if rows_full else full_q // bq, full_k if keys_full else 1)
        out_specs.append(
            pl.BlockSpec((None, None, bq if rows_full else 1, full_k if keys_full else 1), lambda b, h, i: (b, h, i, 0))
        )
        out_shape.append(jax.ShapeDtypeStruct(dbias_shape, jnp.float32))
    results = _call(
        plan,
        functools.partial(_dq_kernel, plan=plan, has_bias=has_bias, has_mask=has_mask, want_dbias=want_dbias),
        grid=(plan.batch, plan.heads, full_q // bq),
        in_specs=dq_in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        name="flash_attention_dq",
    )(q, k, v, do, lse, delta, *extras)
    dq = results[0]
    dbias_raw = results[1] if want_dbias else None
    return dq, dk, dv, dbias_raw


# ---------------------------------------------------------------------------------------- TPU: streamed kernels
#
# Mosaic copies every block into VMEM, so the whole-sequence K/V (and bias rows) of the kernels above would bound the
# sequence length by VMEM (16 MiB per core on v4: 16k tokens at head_dim 64 did not compile). On TPU the other
# sequence is streamed instead: a 4-D grid (batch, head, outer block, inner block) whose innermost "arbitrary" axis
# visits one [block_q, block_k] tile per step, with the running statistics / gradient accumulators in VMEM scratch;
# the outer block's outputs stay resident across the inner axis and are written on its last step.


def _extra_spec_2d(shape, block_q: int, block_k: int, q_axis: int, k_axis: int):
    """BlockSpec over a bias/mask [bB, bH, bQ, bK] (size-1 dims broadcast) for a 4-D grid: the q block index is grid
    axis `q_axis`, the k block index grid axis `k_axis`."""
    bb, bh, bq, bk = shape

    def index_map(*idx):
        b, h = idx[0], idx[1]
        return (b if bb != 1 else 0, h if bh != 1 else 0, idx[q_axis] if bq != 1 else 0, idx[k_axis] if bk != 1 else 0)

    return pl.BlockSpec((None, None, 1 if bq == 1 else block_q, 1 if bk == 1 else block_k), index_map)


def _seq_spec_2d(plan: Plan, block: int, axis: int):
    return pl.BlockSpec((None, None, block, plan.head_dim_pad), lambda *idx: (idx[0], idx[1], idx[axis], 0))


def _stat_spec_2d(block: int, axis: int):
    return pl.BlockSpec((None, None, block, 1), lambda *idx: (idx[0], idx[1], idx[axis], 0))


def _tile(ref):
    return None if ref is None else ref[...]


def _forward_kernel_streamed(*refs, plan: Plan, has_bias: bool, has_mask: bool):
    (q_ref, k_ref, v_ref), bias_ref, mask_ref, rest = _split_refs(refs, has_bias, has_mask, 3)
    o_ref, lse_ref, acc_ref, m_ref, l_ref = rest
    j = pl.program_id(3)
    block_k = plan.block_k

    @pl.when(j == 0)
    def _init():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
        m_ref[...] = jnp.full(m_ref.shape, -jnp.inf, jnp.float32)
        l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)

    s = _scores(plan, q_ref[...], k_ref[...], _tile(bias_ref), _tile(mask_ref), j * block_k, block_k)
    acc, m, l = _online_softmax_step(plan, s, v_ref[...], acc_ref[...], m_ref[...], l_ref[...])
    acc_ref[...], m_ref[...], l_ref[...] = acc, m, l

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        _write_output(o_ref, lse_ref, acc_ref[...], m_ref[...], l_ref[...])


def _forward_streamed(plan: Plan, q, k, v, bias, mask):
    bq, bk = plan.block_q, plan.block_k
    in_specs = [_seq_spec_2d(plan, bq, 2), _seq_spec_2d(plan, bk, 3), _seq_spec_2d(plan, bk, 3)]
    args = [q, k, v]
    for extra, shape in ((bias, plan.bias_shape), (mask, plan.mask_shape)):
        if extra is not None:
            in_specs.append(_extra_spec_2d(shape, bq, bk, 2, 3))
            args.append(extra)
    kernel = functools.partial(_forward_kernel_streamed, plan=plan, has_bias=bias is not None, has_mask=mask is not None)
    return _call(
        plan,
        kernel,
        grid=(plan.batch, plan.heads, plan.seq_q_pad // bq, plan.seq_k_pad // bk),
        in_specs=in_specs,
        out_specs=[_seq_spec_2d(plan, bq, 2), _stat_spec_2d(bq, 2)],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((plan.batch, plan.heads, plan.seq_q_pad, 1), jnp.float32),
        ],
        scratch_shapes=[_vmem((bq, plan.head_dim_pad)), _vmem((bq, 1)), _vmem((bq, 1))],
        name="flash_attention_forward",
    )(*args)


def _dkv_kernel_streamed(*refs, plan: Plan, has_bias: bool, has_mask: bool):
    leading, bias_ref, mask_ref, rest = _split_refs(refs, has_bias, has_mask, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = leading
    dk_ref, dv_ref, dk_acc, dv_acc = rest
    i = pl.program_id(3)  # q block (inner); the k block is grid axis 2

    @pl.when(i == 0)
    def _init():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    q, do = q_ref[...], do_ref[...]
    block_k = plan.block_k_bwd
    p, ds = _probs_and_dscores(
        plan, q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], _tile(bias_ref), _tile(mask_ref),
        pl.program_id(2) * block_k, block_k,
    )  # fmt: skip
    dv_acc[...] += _dot_tn(plan, p.astype(do.dtype), do)
    dk_acc[...] += _dot_tn(plan, ds.astype(q.dtype), q)

    @pl.when(i == pl.num_programs(3) - 1)
    def _finish():
        dk_ref[...] = (dk_acc[...] * plan.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


def _dq_kernel_streamed(*refs, plan: Plan, has_bias: bool, has_mask: bool, want_dbias: bool, keys_full: bool,
                        rows_full: bool):  # fmt: skip
    leading, bias_ref, mask_ref, rest = _split_refs(refs, has_bias, has_mask, 6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = leading
    dq_ref, rest = rest[0], rest[1:]
    dbias_ref = rest.pop(0) if want_dbias else None
    dq_acc = rest.pop(0)
    dbias_acc = rest.pop(0) if want_dbias and not keys_full else None
    j = pl.program_id(3)
    block_k = plan.block_k_bwd

    @pl.when(j == 0)
    def _init():
        dq_acc[...] = jnp.zeros(dq_acc.shape, jnp.float32)
        if dbias_acc is not None:
            dbias_acc[...] = jnp.zeros(dbias_acc.shape, jnp.float32)

    k = k_ref[...]
    _, ds = _probs_and_dscores(
        plan, q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...], _tile(bias_ref), _tile(mask_ref),
        j * block_k, block_k,
    )  # fmt: skip
    dq_acc[...] += pl.dot(ds.astype(k.dtype), k, precision=plan.precision)
    if want_dbias:
        tile = ds if rows_full else jnp.sum(ds, axis=0, keepdims=True)
        if keys_full:
            dbias_ref[...] = tile.astype(dbias_ref.dtype)
        else:
            dbias_acc[...] += jnp.sum(tile, axis=1, keepdims=True)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = (dq_acc[...] * plan.scale).astype(dq_ref.dtype)
        if dbias_acc is not None:
            dbias_ref[...] = dbias_acc[...].astype(dbias_ref.dtype)


def _backward_streamed(plan: Plan, q, k, v, bias, mask, lse, delta, do, want_dbias: bool):
    has_bias, has_mask = bias is not None, mask is not None
    extras = [x for x in (bias, mask) if x is not None]
    extra_shapes = [s for x, s in ((bias, plan.bias_shape), (mask, plan.mask_shape)) if x is not None]
    bq, bk = plan.block_q_bwd, plan.block_k_bwd
    nq, nk = plan.seq_q_pad // bq, plan.seq_k_pad // bk
    d = plan.head_dim_pad

    def in_specs(q_axis, k_axis):
        """Specs of (q, k, v, do, lse, delta, bias?, mask?) with q blocks on grid axis q_axis, k blocks on k_axis."""
        q_spec, k_spec, stat = _seq_spec_2d(plan, bq, q_axis), _seq_spec_2d(plan, bk, k_axis), _stat_spec_2d(bq, q_axis)
        extra = [_extra_spec_2d(s, bq, bk, q_axis, k_axis) for s in extra_shapes]
        return [q_spec, k_spec, k_spec, q_spec, stat, stat, *extra]

    # dK/dV: k block outer (axis 2), q blocks streamed (axis 3).
    dk, dv = _call(
        plan,
        functools.partial(_dkv_kernel_streamed, plan=plan, has_bias=has_bias, has_mask=has_mask),
        grid=(plan.batch, plan.heads, nk, nq),
        in_specs=in_specs(q_axis=3, k_axis=2),
        out_specs=[_seq_spec_2d(plan, bk, 2), _seq_spec_2d(plan, bk, 2)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        scratch_shapes=[_vmem((bk, d)), _vmem((bk, d))],
        name="flash_attention_dkv",
    )(q, k, v, do, lse, delta, *extras)

    # dQ (and dbias): q block outer (axis 2), k blocks streamed (axis 3).
    out_specs = [_seq_spec_2d(plan, bq, 2)]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    scratch = [_vmem((bq, d))]
    rows_full = keys_full = False
    if want_dbias:
        _, _, bias_q, bias_k = plan.bias_shape
        rows_full, keys_full = bias_q != 1, bias_k != 1
        rows, cols = (bq if rows_full else 1), (bk if keys_full else 1)
        # [batch, heads, q blocks, rows, cols]: one block per (q block, k block) where the bias spans keys, else one
        # per q block written on its last step; the leading q-block dim keeps Mosaic's last two block dims whole.
        dbias_shape = (plan.batch, plan.heads, nq, rows, plan.seq_k_pad if keys_full else 1)
        out_specs.append(
            pl.BlockSpec((None, None, None, rows, cols), lambda b, h, i, j: (b, h, i, 0, j if keys_full else 0))
        )
        out_shape.append(jax.ShapeDtypeStruct(dbias_shape, jnp.float32))
        if not keys_full:
            scratch.append(_vmem((rows, 1)))
    dq_kernel = functools.partial(
        _dq_kernel_streamed,
        plan=plan,
        has_bias=has_bias,
        has_mask=has_mask,
        want_dbias=want_dbias,
        keys_full=keys_full,
        rows_full=rows_full,
    )
    results = _call(
        plan,
        dq_kernel,
        grid=(plan.batch, plan.heads, nq, nk),
        in_specs=in_specs(q_axis=2, k_axis=3),
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=scratch,
        name="flash_attention_dq",
    )(q, k, v, do, lse, delta, *extras)
    dq = results[0]
    dbias_raw = None
    if want_dbias:
        # back to the layout of the looped kernels: [batch, heads, seq_q_pad or nq, seq_k_pad or 1]
        raw = results[1]
        dbias_raw = raw.reshape(plan.batch, plan.heads, nq * raw.shape[3], raw.shape[4])
    return dq, dk, dv, dbias_raw
