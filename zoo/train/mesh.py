"""Device mesh and shardings of the trainer.

The mesh always has the three axes `data`, `fsdp` and `model` (size 1 when unused), so the same config runs on one
CPU, eight fake CPU devices, a GPU or a multi-host cluster. Parameters carry their `model`-axis partitioning as NNX
metadata (`nnx.with_partitioning(..., eager_sharding=False)` in the model); the trainer adds the `fsdp` axis on the
largest dimension it divides (big_vision's fsdp rule), and the batch is split over `data` x `fsdp`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolve the -1 entry (at most one) of `{"data": -1, "fsdp": 1, "model": 1}` against the device count."""
    unknown = [a for a in axis_sizes if a not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; valid axes are {MESH_AXES}")
    sizes = [int(axis_sizes.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1; got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split into a mesh {dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but {num_devices} are available"
        )
    return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> Mesh:
    """A `Mesh` over all (or the given) devices with axes data/fsdp/model."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(axis_sizes, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, AssertionError, NotImplementedError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _add_fsdp(spec: PartitionSpec, shape: tuple[int, ...], fsdp_size: int, min_size: int) -> PartitionSpec:
    axes = list(spec) + [None] * (len(shape) - len(spec))
    if fsdp_size == 1 or math.prod(shape) < min_size:
        return PartitionSpec(*axes)
    for dim in np.argsort(shape)[::-1]:
        if axes[dim] is None and shape[dim] % fsdp_size == 0:
            axes[dim] = "fsdp"
            break
    return PartitionSpec(*axes)


def _fit_to_mesh(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drop axes that the mesh lacks or that do not divide the dimension (a model axis of size 1 is a no-op)."""
    axes = []
    for dim, axis in enumerate(list(spec) + [None] * (len(shape) - len(spec))):
        names = axis if isinstance(axis, tuple) else (axis,)
        if axis is None or any(n not in mesh.shape for n in names):
            axes.append(None)
            continue
        size = math.prod(mesh.shape[n] for n in names)
        axes.append(axis if size > 1 and shape[dim] % size == 0 else None)
    return PartitionSpec(*axes)


def state_shardings(state, mesh: Mesh, *, fsdp_min_size: int = 2**14):
    """NamedShardings for a (possibly abstract) NNX state: model-axis metadata + fsdp on the largest dimension."""
    specs = nnx.get_partition_spec(state)
    fsdp_size = mesh.shape["fsdp"]

    def leaf_sharding(value, spec):
        spec_value = spec.get_value() if isinstance(spec, nnx.Variable) else spec
        raw = value.get_value() if isinstance(value, nnx.Variable) else value
        if not hasattr(raw, "shape"):
            # An empty subtree (e.g. optax's MaskedNode for frozen params) must stay the same empty subtree.
            return spec.replace(raw) if isinstance(spec, nnx.Variable) else raw
        shape = tuple(raw.shape)
        if not shape:
            sharding = NamedSharding(mesh, PartitionSpec())
        else:
            spec_value = _fit_to_mesh(
                spec_value if isinstance(spec_value, PartitionSpec) else PartitionSpec(), shape, mesh
            )
            sharding = NamedSharding(mesh, _add_fsdp(spec_value, shape, fsdp_size, fsdp_min_size))
        return spec.replace(sharding) if isinstance(spec, nnx.Variable) else sharding

    return jax.tree.map(leaf_sharding, state, specs, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding."""
    return NamedSharding(mesh, PartitionSpec())
