"""The same forward on 8 simulated CPU devices (mesh data=4 x model=2) as on one device."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec

SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from msp_jax.backbones import load_backbone
from msp_jax.partitioning import make_mesh, shard_params, shard_batch
assert jax.device_count() == 8
out = {}
rng = np.random.default_rng(int(sys.argv[1]))
for spec in ("random:t5-tiny", "random:llama-tiny"):
  bb = load_backbone(spec).backbone
  ids = rng.integers(3, 200, size=(8, 12)).astype(np.int32)
  mask = np.ones((8, 12), np.int32); mask[::2, 9:] = 0
  tgt = rng.integers(3, 200, size=(8, 6)).astype(np.int32)
  tmask = np.ones((8, 6), np.int32)
  f = jax.jit(lambda p, i, m, t, tm: bb.target_logits(p, bb.embed(p, i), m, t, tm))
  single = np.asarray(jax.device_put(f(jax.device_put(bb.params, jax.devices()[0]), ids, mask, tgt, tmask)))
  mesh = make_mesh(num_model=2)
  params = shard_params(bb.params, bb.param_axes(), mesh)
  sharded_leaves = sum(1 for x in jax.tree.leaves(params) if any(a is not None for a in x.sharding.spec))
  batch = shard_batch({"i": ids, "m": mask, "t": tgt, "tm": tmask}, mesh)
  multi = np.asarray(f(params, batch["i"], batch["m"], batch["t"], batch["tm"]))
  out[spec] = (float(np.max(np.abs(single - multi))), float(np.max(np.abs(single))), sharded_leaves)
print(repr(out))
"""


def test_eight_simulated_devices_match_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  seed = np.random.SeedSequence().entropy % 2**31
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(seed)], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = eval(proc.stdout.strip().splitlines()[-1])
  for spec, (diff, scale, sharded_leaves) in results.items():
    assert sharded_leaves > 0, f"{spec}: nothing was actually sharded over 'model'"
    # Same math, different reduction order across devices: f32 round-off only.
    assert diff <= 1e-5 * max(scale, 1.0), (spec, diff, scale, seed)


def test_rules_and_mesh_errors():
  import jax

  from msp_jax.partitioning import logical_to_spec, make_mesh

  mesh = make_mesh(num_model=1)
  assert logical_to_spec(("embed", "mlp"), (4, 6), mesh) == PartitionSpec(None, "model")
  from msp_jax.errors import ConfigError

  with pytest.raises(ConfigError, match="no partitioning rule"):
    logical_to_spec(("nonsense",), (4,), mesh)
  with pytest.raises(ConfigError, match="divide the device count"):
    make_mesh(num_model=len(jax.devices()) + 1)


def test_shard_batch_needs_a_batch_dimension():
  from msp_jax.errors import ConfigError
  from msp_jax.partitioning import make_mesh, shard_batch

  with pytest.raises(ConfigError, match="leading batch dimension"):
    shard_batch({"ids": np.zeros((2, 3), np.int32), "step": np.int32(0)}, make_mesh())


def test_put_global_places_each_slice_of_a_host_array():
  import jax

  from msp_jax.partitioning import batch_sharding, make_mesh, put_global

  host = np.random.default_rng().normal(size=(len(jax.devices()) * 2, 3)).astype(np.float32)
  array = put_global(host, batch_sharding(make_mesh(), host.ndim))
  assert array.shape == host.shape and array.sharding.spec == PartitionSpec("data", None)
  for shard in array.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), host[shard.index])
