"""The programs that `kernels.triton_compile` (GPU) and `kernels.tpu_compile` (TPU) compile ahead of time.

Each case returns (function, argument specs): the gradient of a scalar loss, so the forward and every backward kernel
are in the program, with the Pallas calls built for the target backend although this host is a CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["attention_case", "rasterize_case"]


def attention_case(platform: str, batch: int, seq_q: int, seq_k: int, heads: int, head_dim: int, dtype, *,
                   bias=False, mask=False):  # fmt: skip
    """Flash attention forward + dK/dV + dQ(/dbias) kernels for `platform` ("gpu" or "tpu").

    bias: False, True (a relative-position bias [1, heads, seq_q, seq_k]) or a shape broadcastable to
    [batch, heads, seq_q, seq_k]; its gradient is taken too. mask: a key-padding mask [batch, 1, 1, seq_k].
    """
    from kernels.flash_attention import attention_pallas

    q = jax.ShapeDtypeStruct((batch, seq_q, heads, head_dim), dtype)
    kv = jax.ShapeDtypeStruct((batch, seq_k, heads, head_dim), dtype)
    args = [q, kv, kv]
    if bias:
        args.append(jax.ShapeDtypeStruct((1, heads, seq_q, seq_k) if bias is True else tuple(bias), jnp.float32))
    if mask:
        args.append(jax.ShapeDtypeStruct((batch, 1, 1, seq_k), jnp.bool_))

    def loss(q, k, v, *extra):
        extra = list(extra)
        b = extra.pop(0) if bias else None
        m = extra.pop(0) if mask else None
        out = attention_pallas(q, k, v, bias=b, mask=m, interpret=False, platform=platform)
        return jnp.sum(out.astype(jnp.float32))

    return jax.grad(loss, argnums=(0, 1, 2, 3) if bias else (0, 1, 2)), args


def rasterize_case(pallas_backend: str, num_gaussians: int, size: int, capacity: int, features: int = 3):
    """The rasterizer's Pallas compositing forward + backward for `pallas_backend` ("triton" or "mosaic_tpu")."""
    from kernels.rasterize import rasterize

    n = num_gaussians
    args = [
        jax.ShapeDtypeStruct((n, 3), jnp.float32),
        jax.ShapeDtypeStruct((n, 4), jnp.float32),
        jax.ShapeDtypeStruct((n, 3), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.float32),
        jax.ShapeDtypeStruct((n, features), jnp.float32),
    ]
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[2, 3] = 4.0
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)

    def loss(means, quats, scales, opacities, colors):
        out = rasterize(means, quats, scales, opacities, colors, jnp.asarray(viewmat), jnp.asarray(K), size, size,
                        impl="pallas", interpret=False, capacity=capacity, pallas_backend=pallas_backend)  # fmt: skip
        return jnp.sum(out.image) + jnp.sum(out.alpha)

    return jax.grad(loss, argnums=(0, 1, 2, 3, 4)), args
