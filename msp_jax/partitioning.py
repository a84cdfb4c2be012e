"""Device mesh, logical axis rules and shardings (what T5X's partitioning does, on `jax.jit` + `NamedSharding`).

Parameters declare *logical* axes (`embed`, `mlp`, `heads`, `joined_kv`, `vocab`, ...); a rule table maps
each logical axis onto a mesh axis of the `('data', 'model')` mesh or onto nothing (replicated). Soft prompts
and mixers (`prompt`, `prompt_embed`, `attributes`) are small and always replicated; batches split over `data`.

Multi-host: every process runs the same program on the same host values (the batch of a step is a pure function
of the step; the frozen backbone is read from the same checkpoint), and `put_global` builds each global array
from the host copy, each process filling only the shards of its own devices.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from msp_jax.errors import ConfigError

LogicalRules = Sequence[tuple[str, str | None]]

# 1-D model parallelism in the Megatron style T5X uses: shard the wide dimensions (heads, mlp, vocab) over
# 'model', keep 'embed' whole so activations need only one all-reduce per block.
DEFAULT_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("relpos_buckets", None),
    ("length", None),
    ("attributes", None),
    ("prompt", None),
    ("prompt_embed", None),
)


def make_mesh(num_model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `('data', 'model')` mesh over `devices` (default: all, of every process), `num_model` devices per model
  replica. On GPU/CPU clusters `jax.devices()` lists devices process by process, so when `num_model` divides
  the devices of one host, each model replica stays inside a host and only 'data' collectives cross hosts."""
  devices = list(jax.devices() if devices is None else devices)
  if num_model < 1 or len(devices) % num_model:
    raise ConfigError(f"num_model={num_model} must be >= 1 and divide the device count {len(devices)}")
  grid = np.asarray(devices, dtype=object).reshape(len(devices) // num_model, num_model)
  return Mesh(grid, ("data", "model"))


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: LogicalRules = DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dimensions carry `logical_axes`.

  A dimension that does not divide evenly over its mesh axis (e.g. 9 heads on 2 model devices) is replicated
  instead: correct everywhere, just less memory-efficient on that one array.
  """
  table = dict(rules)
  spec = []
  used = set()
  for name, size in zip(logical_axes, shape):
    if name is not None and name not in table:
      raise ConfigError(f"logical axis {name!r} has no partitioning rule; known axes: {sorted(table)}")
    mesh_axis = table.get(name) if name is not None else None
    if mesh_axis is None or mesh_axis in used or size % mesh.shape[mesh_axis]:
      spec.append(None)
    else:
      spec.append(mesh_axis)
      used.add(mesh_axis)
  return PartitionSpec(*spec)


def _is_axes_leaf(x: Any) -> bool:
  return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def param_shardings(params: Any, param_axes: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """A tree of `NamedSharding` matching `params`, from a tree of logical-axis tuples matching it."""
  return jax.tree.map(
      lambda axes, p: NamedSharding(mesh, logical_to_spec(axes, np.shape(p), mesh, rules)),
      param_axes, params, is_leaf=_is_axes_leaf)


def put_global(value: Any, sharding: NamedSharding) -> jax.Array:
  """One global array with `sharding` from `value`, a host (or single-device) array every process holds whole.

  Each process transfers only the slices its own devices hold, so this is the same call on one host and on
  many. An array that already spans several processes is resharded instead (no host copy exists).
  """
  if isinstance(value, jax.Array) and not value.is_fully_addressable:
    return jax.device_put(value, sharding)
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params: Any, param_axes: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """Places `params` on `mesh` according to their logical axes (every process passes the same values)."""
  return jax.tree.map(put_global, params, param_shardings(params, param_axes, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dimension over 'data', the rest replicated."""
  return NamedSharding(mesh, PartitionSpec("data", *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits every array of `batch` over 'data' along its first axis (its size must divide evenly).

  `batch` is the *global* batch, e.g. {'text_ids': [batch, length], ...}, identical on every process; each
  process keeps the rows of its own devices.
  """
  data_size = mesh.shape["data"]

  def put(x):
    shape = np.shape(x)
    if not shape:
      raise ConfigError(f"every batch array needs a leading batch dimension; got a scalar {x!r}")
    if shape[0] % data_size:
      raise ConfigError(f"batch size {shape[0]} must be a multiple of the data-parallel size {data_size}")
    return put_global(x, batch_sharding(mesh, len(shape)))

  return jax.tree.map(put, batch)
