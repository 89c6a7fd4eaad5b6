"""Which patches the student sees: MaskAlign's attention-guided masking and MAE's random masking.

Both return `ids_keep` [B, K] (patch indices, in the order they were drawn) with K = int(L * (1 - mask_ratio)), the
official count (58 of 196 at ratio 0.7). Everything is a pure function of a PRNG key, so it runs under `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def num_keep(num_patches: int, mask_ratio: float) -> int:
    """int(L * (1 - mask_ratio)), the official number of visible patches; a ValueError when it is 0 or all."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of {num_patches}")
    return keep


def keep_ids_from_noise(noise: jax.Array, keep: int) -> jax.Array:
    """MAE's `random_masking` given its noise [B, L]: the `keep` patches of smallest noise, in ascending order."""
    return jnp.argsort(noise, axis=1)[:, :keep].astype(jnp.int32)


def random_keep_ids(key: jax.Array, batch: int, num_patches: int, keep: int) -> jax.Array:
    """MAE's random masking: uniform noise [B, L] (as `torch.rand`), argsort, keep the first `keep`."""
    return keep_ids_from_noise(jax.random.uniform(key, (batch, num_patches)), keep)


def attention_keep_ids(key: jax.Array, importance: jax.Array, keep: int) -> jax.Array:
    """MaskAlign's attention masking: `keep` patches drawn without replacement with probability proportional to
    `importance` [B, L] (the teacher's CLS attention), in the order of the draw.

    The official code samples `torch.multinomial(importance, L, replacement=False)` and keeps the first K. The
    Gumbel-top-k trick (top K of log w + Gumbel noise, Kool et al. 2019) has exactly that distribution, ordered as
    the successive draws. A zero weight is never drawn before a positive one (its log is clamped to the float32
    minimum, so a batch with fewer than K positive weights still fills up, where torch would raise).
    """
    if importance.ndim != 2 or keep > importance.shape[1]:
        raise ValueError(f"importance must be [batch, num_patches >= {keep}]; got shape {tuple(importance.shape)}")
    weights = importance.astype(jnp.float32)
    log_w = jnp.log(jnp.maximum(weights, jnp.finfo(jnp.float32).tiny))
    scores = log_w + jax.random.gumbel(key, weights.shape, jnp.float32)
    return jax.lax.top_k(scores, keep)[1].astype(jnp.int32)


def keep_mask(ids_keep: jax.Array, num_patches: int) -> jax.Array:
    """Boolean [B, L]: True at the kept patches (for visualisation and the notebook; the model needs only ids)."""
    batch = ids_keep.shape[0]
    return jnp.zeros((batch, num_patches), bool).at[jnp.arange(batch)[:, None], ids_keep].set(True)
