"""The device mesh (axes data, fsdp, tensor; Auto axis types) and logical -> mesh shardings."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from metalm_jax.types import ConfigError

AXES = ("data", "fsdp", "tensor")


def resolve_shape(shape, n_devices: int) -> tuple[int, ...]:
    """Fills the one -1 in `shape` so the product is n_devices; raises naming mesh.shape."""
    shape = [int(s) for s in shape]
    if len(shape) != len(AXES):
        raise ConfigError(f"mesh.shape must have {len(AXES)} sizes for {AXES}, got {shape}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh.shape may hold at most one -1, got {shape}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n_devices % known:
            raise ConfigError(f"mesh.shape {shape}: {n_devices} devices not divisible by {known}")
        shape[shape.index(-1)] = n_devices // known
    if math.prod(shape) != n_devices:
        raise ConfigError(f"mesh.shape {shape} needs {math.prod(shape)} devices, have {n_devices}")
    return tuple(shape)


def make_mesh(shape, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    dims = resolve_shape(shape, len(devices))
    return Mesh(np.asarray(devices).reshape(dims), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def rules_tuple(rules) -> tuple:
    return tuple((name, tuple(ax) if isinstance(ax, list | tuple) else ax) for name, ax in rules)


def logical_shardings(boxed_tree, mesh: Mesh, rules):
    """NamedShardings for a tree of nn.Partitioned (or abstract) leaves, via the rules."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules_tuple(rules))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Rows split over the mesh axes the `batch` rule names; other dims replicated."""
    spec = nn.logical_to_mesh_axes(("batch", None), rules_tuple(rules))
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
