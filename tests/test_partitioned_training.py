"""A prompt-training step on 8 simulated CPU devices gives the loss and gradients of one device.

Meshes data=4 x model=2 (both backbones) and data=8 x model=1 (llama): the frozen backbone sharded by its logical axes
(`msp_jax.partitioning`), the batch split over 'data', soft prompts + mixer + optimizer state replicated.
The device count must be fixed before JAX starts, so the comparison runs in a fresh interpreter.

Tolerance: the sharded step does the same float32 arithmetic, but sums in another order (the batch loss is
reduced across data shards, matmuls over 'model'-sharded mlp/heads/vocab are summed across devices), so
results differ by round-off only: ~1e-7 relative, compounded over the layers (measured: loss <= 2e-7
relative, every gradient entry within 7e-7 of the step's largest gradient entry). The tolerance is 1e-5 of
the loss, and 1e-5 of the largest gradient entry of the whole step, not of each leaf: the attention query's
gradient is a small difference of large terms (each attribute's deviation from the softmax-weighted mean),
so its round-off is set by the size of those terms (relative to its own size it reached 2e-4).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

import toy_domain

RTOL = 1e-5

SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
""" + toy_domain.IMPORT_TOY_DOMAIN + r"""
import jax, numpy as np
from jax.sharding import PartitionSpec
from msp_jax.tuning import training
from msp_jax.partitioning import make_mesh, replicated, shard_batch, shard_params

assert jax.device_count() == 8
seed = int(sys.argv[1])
config = training.TrainConfig(steps=1, batch_size=8, learning_rate=0.1)
grad_fn = jax.jit(jax.value_and_grad(training.loss_fn, has_aux=True), static_argnums=3)

def leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}

out = {}
for spec, meshes in (("random:t5-tiny", (2,)), ("random:llama-tiny", (2, 1))):
  bb, model, batch, soft = toy_step_inputs(spec, batch_size=8, seed=seed)
  optimizer = training.make_optimizer(config)
  one = jax.devices()[0]
  put = lambda tree: jax.device_put(jax.tree.map(np.asarray, tree), one)
  (loss, _), grads = grad_fn(put(soft), put(bb.params), put(batch), model)
  state = put({"params": soft, "opt_state": optimizer.init(soft), "step": np.int32(0)})
  _, metrics = training.make_train_step(model, optimizer)(state, put(bb.params), put(batch))
  reference = dict(loss=float(loss), grads=leaves(grads), step_loss=float(metrics["loss"]),
                   grad_norm=float(metrics["grad_norm"]))
  for num_model in meshes:
    mesh = make_mesh(num_model)
    frozen = shard_params(bb.params, bb.param_axes(), mesh)
    sharded_batch = shard_batch(batch, mesh)
    assert sharded_batch["text_ids"].sharding.spec == PartitionSpec("data", None)
    model_sharded = sum(1 for x in jax.tree.leaves(frozen) if "model" in tuple(x.sharding.spec))
    soft_r = jax.device_put(soft, replicated(mesh))
    (loss_m, _), grads_m = grad_fn(soft_r, frozen, sharded_batch, model)
    state = jax.device_put({"params": soft, "opt_state": optimizer.init(soft), "step": np.int32(0)},
                           replicated(mesh))
    new_state, metrics = training.make_train_step(model, optimizer, mesh)(state, frozen, sharded_batch)
    replicated_out = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(new_state))
    out[(spec, mesh.shape["data"], num_model)] = dict(
        reference=reference, loss=float(loss_m), grads=leaves(grads_m), step_loss=float(metrics["loss"]),
        grad_norm=float(metrics["grad_norm"]), model_sharded=model_sharded, replicated_out=replicated_out)
np.save(sys.argv[2], out, allow_pickle=True)
"""


def test_train_step_on_eight_devices_matches_one_device(tmp_path):
  seed = int(np.random.SeedSequence().entropy % 2**31)
  result_file = tmp_path / "results.npy"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(seed), str(result_file)], capture_output=True,
                        text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = np.load(result_file, allow_pickle=True).item()
  assert set(results) == {("random:t5-tiny", 4, 2), ("random:llama-tiny", 4, 2), ("random:llama-tiny", 8, 1)}
  for (spec, data, model), r in results.items():
    where = f"{spec} data={data} x model={model} (seed {seed})"
    ref = r["reference"]
    if model > 1:
      assert r["model_sharded"] > 0, f"{where}: no backbone param was sharded over 'model'"
    assert r["replicated_out"], f"{where}: the updated soft params / optimizer state are not replicated"
    for name in ("loss", "step_loss"):
      assert abs(r[name] - ref[name]) <= RTOL * abs(ref[name]), (where, name, r[name], ref[name])
    assert abs(r["grad_norm"] - ref["grad_norm"]) <= RTOL * ref["grad_norm"], (where, r["grad_norm"],
                                                                               ref["grad_norm"])
    assert r["grads"].keys() == ref["grads"].keys()
    scale = max(float(np.max(np.abs(g))) for g in ref["grads"].values())   # largest gradient entry
    for leaf, want in ref["grads"].items():
      assert np.max(np.abs(want)) > 0, f"{where}: {leaf} gets no gradient at all"
      diff = float(np.max(np.abs(r["grads"][leaf] - want)))
      assert diff <= RTOL * scale, (where, leaf, diff, scale)
