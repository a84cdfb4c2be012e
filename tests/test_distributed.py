"""Multi-process runs: settings from the environment, and a real 2-process `jax.distributed` training step.

The 2-process test starts two fresh interpreters on this machine (CPU, Gloo collectives, 2 simulated devices
each: 4 global devices), joined through `msp_jax.distributed.initialize()` from `MSP_*` variables. Each builds
the same batch and backbone, shards them over a data=2 x model=2 mesh (so 'data' crosses the two processes
and 'model' stays inside each) and runs one `training.make_train_step` step. Both must report the same
loss / gradient norm / updated params, equal (to f32 round-off) to one step on a single device.

The 2-process generation test has each process sample its share of the batches (`generation.generate`), gather
the others' and return the 1-process result; and checks who runs and records a shared / coordinator-only stage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import toy_domain
from msp_jax import distributed
from msp_jax.errors import ConfigError

RTOL = 1e-5  # same math as one device, summed in another order: round-off only (see test_partitioned_training)

FULL = {"MSP_COORDINATOR_ADDRESS": "10.0.0.1:1234", "MSP_NUM_PROCESSES": "4", "MSP_PROCESS_ID": "3"}


def test_no_settings_is_a_single_process_run():
  assert distributed.settings_from(environ={}) is None
  assert distributed.settings_from(environ={"MSP_DISTRIBUTED": "off", **FULL}) is None
  assert distributed.initialize(environ={}) is False


def test_settings_from_environment_and_arguments():
  assert distributed.settings_from(environ=FULL) == distributed.DistributedSettings("10.0.0.1:1234", 4, 3)
  # Arguments (e.g. from a launcher) take precedence over the environment, one by one.
  assert distributed.settings_from(process_id=0, environ=FULL) == distributed.DistributedSettings(
      "10.0.0.1:1234", 4, 0)
  assert distributed.settings_from("h:1", 2, 1, environ={}) == distributed.DistributedSettings("h:1", 2, 1)


def test_auto_leaves_unset_values_to_jax():
  assert distributed.settings_from(environ={"MSP_DISTRIBUTED": "auto"}) == distributed.DistributedSettings(
      None, None, None, auto=True)
  auto_with_address = {"MSP_DISTRIBUTED": "AUTO", "MSP_COORDINATOR_ADDRESS": "head:9876"}
  assert distributed.settings_from(environ=auto_with_address) == distributed.DistributedSettings(
      "head:9876", None, None, auto=True)


@pytest.mark.parametrize("missing", sorted(FULL))
def test_partial_settings_name_the_missing_variable(missing):
  environ = {k: v for k, v in FULL.items() if k != missing}
  with pytest.raises(ConfigError, match=f"but {missing} not"):
    distributed.settings_from(environ=environ)


@pytest.mark.parametrize("environ, message", [
    ({**FULL, "MSP_NUM_PROCESSES": "two"}, "MSP_NUM_PROCESSES='two' is not an integer"),
    ({**FULL, "MSP_PROCESS_ID": "4"}, "MSP_PROCESS_ID=4 must be below MSP_NUM_PROCESSES=4"),
    ({**FULL, "MSP_PROCESS_ID": "-1"}, "MSP_PROCESS_ID=-1 must be >= 0"),
    ({**FULL, "MSP_NUM_PROCESSES": "0"}, "MSP_NUM_PROCESSES=0 must be >= 1"),
    ({**FULL, "MSP_COORDINATOR_ADDRESS": "10.0.0.1"}, "MSP_COORDINATOR_ADDRESS='10.0.0.1' is not host:port"),
    ({"MSP_DISTRIBUTED": "yes"}, "MSP_DISTRIBUTED='yes' is not one of"),
])
def test_malformed_settings_are_refused(environ, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    distributed.settings_from(environ=environ)


def test_auto_without_a_cluster_says_what_to_set():
  # A fresh interpreter: jax.distributed.initialize refuses to run once this one has used JAX.
  script = ("from msp_jax import distributed\n"
            "try:\n  distributed.initialize()\nexcept Exception as e:\n  print(type(e).__name__, e)\n")
  env = {k: v for k, v in os.environ.items() if not k.startswith(("MSP_", "JAX_COORDINATOR", "SLURM_", "OMPI_"))}
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                        env={**env, "JAX_PLATFORMS": "cpu", "MSP_DISTRIBUTED": "auto"})
  expected = "ConfigError MSP_DISTRIBUTED=auto, but JAX detected no TPU pod, SLURM or Open MPI job here"
  assert proc.stdout.startswith(expected), proc.stdout + proc.stderr[-2000:]
  assert "set MSP_COORDINATOR_ADDRESS, MSP_NUM_PROCESSES and MSP_PROCESS_ID" in proc.stdout


WORKER = r"""
import json, sys
from msp_jax import distributed
assert distributed.initialize() and distributed.initialize()  # from MSP_*; the second call is a no-op
""" + toy_domain.IMPORT_TOY_DOMAIN + r"""
import jax, numpy as np
from msp_jax.tuning import training
from msp_jax.partitioning import make_mesh, put_global, replicated, shard_batch, shard_params

seed = int(sys.argv[1])
# The same pure function of (seed, step) on every process: the global batch needs no communication.
bb, model, batch, soft = toy_step_inputs("random:llama-tiny", batch_size=4, seed=seed)
optimizer = training.make_optimizer(training.TrainConfig(steps=1, batch_size=4))
new_state = lambda: {"params": soft, "opt_state": jax.tree.map(np.asarray, optimizer.init(soft)),
                     "step": np.int32(0)}

def summary(state, metrics):
  return {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
          "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(state["params"])]}

out = {"processes": jax.process_count(), "devices": jax.device_count()}
if distributed.is_coordinator():  # the single-device reference, on this process's first device only
  one = jax.local_devices()[0]
  put = lambda tree: jax.device_put(jax.tree.map(np.asarray, tree), one)
  out["reference"] = summary(*training.make_train_step(model, optimizer)(put(new_state()), put(bb.params),
                                                                         put(batch)))
mesh = make_mesh(num_model=2)
frozen = shard_params(bb.params, bb.param_axes(), mesh)
sharded = shard_batch(batch, mesh)
state, metrics = training.make_train_step(model, optimizer, mesh)(
    jax.device_put(new_state(), replicated(mesh)), frozen, sharded)
out["mesh"] = dict(mesh.shape)
out["sharded"] = summary(state, metrics)
out["replicated_out"] = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state))
out["model_sharded"] = sum("model" in tuple(x.sharding.spec) for x in jax.tree.leaves(frozen))
out["frozen_spans_processes"] = any(not x.is_fully_addressable for x in jax.tree.leaves(frozen))
# The rows of the global batch this process holds, and the whole batch gathered back (a cross-process reshard).
rows = sorted({(s.index[0].start, s.index[0].stop) for s in sharded["text_ids"].addressable_shards})
out["rows"] = rows
out["local_rows_match"] = all(np.array_equal(np.asarray(s.data), batch["text_ids"][s.index])
                              for s in sharded["text_ids"].addressable_shards)
out["gathered_matches"] = bool(np.array_equal(np.asarray(put_global(sharded["text_ids"], replicated(mesh))),
                                              batch["text_ids"]))
print("RESULT " + json.dumps(out), flush=True)
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(script: str, args: list[str], num_processes: int, timeout: float) -> list[dict]:
  """Runs `script` as `num_processes` joined JAX processes on this machine; their RESULT json, by process."""
  base = {k: v for k, v in os.environ.items() if not k.startswith(("MSP_", "JAX_COORDINATOR"))}
  base.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
              MSP_COORDINATOR_ADDRESS=f"localhost:{free_port()}", MSP_NUM_PROCESSES=str(num_processes))
  procs = [subprocess.Popen([sys.executable, "-c", script, *args], env={**base, "MSP_PROCESS_ID": str(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(num_processes)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout))
  finally:
    for proc in procs:  # one failed process leaves the others waiting for it: end them
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  results = []
  for i, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
    assert proc.returncode == 0, f"process {i} failed:\n{stderr[-3000:]}"
    results.append(json.loads(stdout.split("RESULT ", 1)[1]))
  return results


def test_two_processes_train_step_matches_one_device():
  seed = int(np.random.SeedSequence().entropy % 2**31)
  first, second = run_processes(WORKER, [str(seed)], num_processes=2, timeout=240)
  for r in (first, second):
    assert (r["processes"], r["devices"], r["mesh"]) == (2, 4, {"data": 2, "model": 2})
    assert r["model_sharded"] > 0 and r["frozen_spans_processes"]
    assert r["replicated_out"]
    assert r["local_rows_match"] and r["gathered_matches"]
  # 'data' crosses the processes: each holds its own half of the global batch of 4.
  assert (first["rows"], second["rows"]) == ([[0, 2]], [[2, 4]])
  # One SPMD program: both processes hold the very same replicated results.
  assert first["sharded"] == second["sharded"]
  ref, got = first["reference"], first["sharded"]
  for name in ("loss", "grad_norm"):
    assert abs(got[name] - ref[name]) <= RTOL * abs(ref[name]), (name, got[name], ref[name], seed)
  # AdamW's first update is ~lr * sign(grad); an entry whose gradient is round-off small could flip sign,
  # so the params are compared in bulk: nearly all entries equal to round-off.
  got_params, ref_params = (np.concatenate([np.asarray(p) for p in r["params"]]) for r in (got, ref))
  close = np.isclose(got_params, ref_params, rtol=1e-4, atol=1e-6)
  assert close.mean() > 0.99, (close.mean(), seed)


GENERATION_WORKER = r"""
import dataclasses, json, pathlib, sys, time
from msp_jax import distributed
assert distributed.initialize()
""" + toy_domain.IMPORT_TOY_DOMAIN + r"""
import jax
from msp_jax.run import workflow
from msp_jax.run.config import RunConfig
from msp_jax.run.setup import Experiment
from msp_jax.synthesis import generation, planning
from msp_jax.tuning.model_inputs import InputShapes

seed, workdir = int(sys.argv[1]), sys.argv[2]
bb, model, _, soft = toy_step_inputs("random:llama-tiny", batch_size=2, seed=seed)
# 9 outputs in batches of 2: 5 batches, the last one padded; process 0 samples batches 0, 2, 4 and process 1
# batches 1, 3. A hot, penalised sampler: the random backbone's outputs differ from batch to batch.
requests = [planning.GenerationRequest(e.uid, e.attributes, 3, novel=k == 2) for k, e in enumerate(EXAMPLES[:3])]
sampling = generation.SamplingConfig(max_new_tokens=8, batch_size=2, constrained=False, temperature=1.5, top_k=0,
                                     repetition_penalty=2.0)

def generate(shard):
  r = generation.generate(model, soft, bb.params, requests, list(EXAMPLES), label_mode="inherit",
                          shapes=InputShapes(max_attributes=2, max_text_len=40, max_target_len=20),
                          sampling=sampling, rng=jax.random.PRNGKey(seed), show_progress=False,
                          shard_over_processes=shard)
  return {"candidates": [generation.candidate_to_dict(c) for c in r.candidates], "raw_texts": list(r.raw_texts),
          "generated": r.generated, "dropped": r.dropped, "outcomes": r.outcomes,
          "closed_by_budget": r.closed_by_budget, "sampled_batches": r.sampled_batches}

out = {"sharded": generate(True)}
if distributed.is_coordinator():  # the single-process run, on this process alone
  out["reference"] = generate(False)

# Run._stage in a multi-process run: who computes, who writes the record, what every process gets back.
@dataclasses.dataclass(frozen=True)
class Note:
  process: int
  def to_json(self):
    return {"process": self.process}
  @classmethod
  def from_json(cls, raw):
    return cls(raw["process"])

calls = []
def compute(name):
  def run():
    calls.append(name)
    if distributed.is_coordinator():
      time.sleep(2)  # the others must wait for the record, not read a missing one
    return Note(jax.process_index()), []
  return run

run = workflow.Run(RunConfig(experiment=Experiment(workdir=workdir)), show_progress=False,
                   report=lambda line: None)
notes = [run._stage("shared", "f1", Note, compute("shared"), False, workflow.SHARED),
         run._stage("shared", "f1", Note, compute("shared again"), False, workflow.SHARED),  # cached: nobody runs it
         run._stage("alone", "f2", Note, compute("alone"), False, workflow.COORDINATOR)]
out["stage_calls"], out["stage_notes"] = calls, [n.process for n in notes]
print("RESULT " + json.dumps(out), flush=True)
"""


def test_two_processes_share_generation_and_match_one_process(tmp_path):
  first, second = run_processes(GENERATION_WORKER, ["3", str(tmp_path)], num_processes=2, timeout=240)
  reference = first["reference"]
  assert reference["sampled_batches"] == 5 and reference["generated"] == 9
  assert len(set(reference["raw_texts"])) > 2, reference["raw_texts"]  # batches out of order would show
  assert reference["candidates"]  # label_mode='inherit' keeps the texts: deduplication order matters
  # Each process sampled its own batches (3 and 2 of 5); both gathered all of them: the single-process result.
  assert (first["sharded"]["sampled_batches"], second["sharded"]["sampled_batches"]) == (3, 2)
  without_count = lambda r: {k: v for k, v in r.items() if k != "sampled_batches"}  # noqa: E731
  assert without_count(first["sharded"]) == without_count(second["sharded"]) == without_count(reference)
  # A shared stage runs on every process, a coordinator stage on process 0 only; a cached one on none. Only
  # process 0 writes the record, and every process returns it.
  assert first["stage_calls"] == ["shared", "alone"] and second["stage_calls"] == ["shared"]
  assert first["stage_notes"] == second["stage_notes"] == [0, 0, 0]
