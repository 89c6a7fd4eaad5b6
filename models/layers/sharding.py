"""Sharding metadata of the big kernels and the initialisers that carry it.

The big kernels carry mesh-axis names ("model") through `nnx.with_partitioning`. Flax 0.12 shards variables eagerly
when they carry `out_sharding`, which needs a mesh; `sharding_scope()` turns eager sharding on only when the current
mesh has a "model" axis, so a model still builds in a notebook or a test with no mesh, and
`nnx.get_partition_spec(nnx.state(model))` reports the same specs either way. The trainer adds the "fsdp" axis itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
from flax import nnx

# Mesh-axis specs of the kernels (flax layout: (in, out)).
SPEC_COLUMN_PARALLEL = (None, "model")  # attention qkv, MLP fc1: output features split over "model"
SPEC_ROW_PARALLEL = ("model", None)  # attention out-proj, MLP fc2: input features split over "model"

#: timm's `trunc_normal_(std=.02)` truncates at +-2 std here (flax), the ViT convention for fresh weights.
trunc_normal_002 = nnx.initializers.truncated_normal(stddev=0.02)
zeros = nnx.initializers.zeros_init()


def partitioned(init: Callable[..., jax.Array], spec: tuple[str | None, ...] | None) -> Callable[..., jax.Array]:
    """`init` with mesh-axis metadata `spec` (see the module docstring); `spec=None` returns `init` unchanged."""
    return init if spec is None else nnx.with_partitioning(init, spec)


def _mesh_has_model_axis() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return (not mesh.empty) and "model" in mesh.axis_names


@contextlib.contextmanager
def sharding_scope():
    """Build variables born sharded under a mesh with a "model" axis, and unsharded (metadata kept) otherwise."""
    with nnx.use_eager_sharding(nnx.using_eager_sharding() and _mesh_has_model_axis()):
        yield
