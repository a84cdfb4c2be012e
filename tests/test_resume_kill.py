"""A training run killed with SIGKILL mid-way and resumed ends bit-identical to an uninterrupted run.

Each run is a fresh interpreter (no fork under JAX). The run to be killed reads its batches slowly, so the
kill lands after its first checkpoint and before its last step; where exactly (mid-step, mid-save) is up to
the scheduler, which is the point: any moment must be safe.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

import toy_domain

STEPS, CHECKPOINT_EVERY = 12, 3

TRAIN_SCRIPT = toy_domain.IMPORT_TOY_DOMAIN + r"""
import pathlib, sys, time
import jax, numpy as np
from msp_jax.tuning import training
from msp_jax.backbones import load_backbone
from msp_jax.tuning.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.tuning.msp_model import MixtureConfig, MspModel

workdir, delay, steps, every = pathlib.Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ontology, examples = ONTOLOGY, list(EXAMPLES)
backbone = load_backbone("random:llama-tiny").backbone
model = MspModel(backbone, ontology, MixtureConfig(mixer="attention", prefix_length=3, attribute_length=4,
                                                   max_attributes=2))
tok = backbone.tokenizer
common = dict(exemplar_pool=examples, ontology=ontology, serialize=lambda e: e.text, encode=tok.encode,
              eos_id=tok.eos_id, pad_id=tok.pad_id, batch_size=4,
              shapes=InputShapes(max_attributes=2, max_text_len=48, max_target_len=24))
batch_fn = make_batch_fn(examples, seed=3, **common)

def batch_at(step):
  time.sleep(delay)  # slow data for the run that gets killed; the batch itself is unchanged
  return batch_fn(step)

# Warmup + cosine and weight decay: the update depends on the restored step count, not only on the moments.
config = training.TrainConfig(steps=steps, batch_size=4, learning_rate=0.3, schedule="cosine", warmup_steps=2,
                              weight_decay=0.01, checkpoint_every=every, eval_every=4, log_every=1, seed=5)
result = training.train(model, backbone.params, batch_at, fixed_batches(examples[:4], **common), config,
                        workdir, {"backbone": "random:llama-tiny"}, show_progress=False)
leaves = {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(result.state)}
np.savez(workdir / "final.npz", **leaves)
print("resumed_from", result.resumed_from)
"""


def _train(workdir: pathlib.Path, delay: float) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(workdir), str(delay), str(STEPS),
                           str(CHECKPOINT_EVERY)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return out


def _committed_steps(workdir: pathlib.Path) -> list[int]:
  """Steps whose checkpoint Orbax has committed (it writes to a temporary name and renames at the end)."""
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _final_state(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  with np.load(workdir / "final.npz") as f:
    return {k: f[k] for k in f.files}


def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
  killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
  straight_run = _train(straight_dir, delay=0.0)  # independent: runs while the other one sleeps
  proc = _train(killed_dir, delay=0.3)
  deadline = time.monotonic() + 240
  while not _committed_steps(killed_dir):
    assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}"
    assert time.monotonic() < deadline, "no checkpoint within 240 s"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (killed_dir / "final.npz").exists()
  killed_at = _committed_steps(killed_dir)
  assert killed_at and max(killed_at) < STEPS, killed_at

  out = _finish(_train(killed_dir, delay=0.0))
  assert f"resumed_from {max(killed_at)}" in out
  assert "resumed_from None" in _finish(straight_run)

  resumed, straight = _final_state(killed_dir), _final_state(straight_dir)
  assert resumed.keys() == straight.keys()
  assert any(k.startswith("['opt_state']") for k in straight)   # moments and counts, not only params
  assert int(straight["['step']"]) == STEPS
  for name in straight:
    assert resumed[name].dtype == straight[name].dtype and resumed[name].shape == straight[name].shape, name
    assert resumed[name].tobytes() == straight[name].tobytes(), f"{name} differs after resume"


# `msp train` on the shipped front_desk domain with a tiny random backbone. Steps 1-6: checkpoints at 2, 4, 6,
# dev evaluations at 4 and 6, so step 4 writes `best/4` and then `checkpoints/4`.
CLI_STEPS, CLI_HELD_STEP = 6, 4
CLI_FLAGS = ["--gin_file", "runs/quickstart.gin", "--gin.msp.experiment.backbone='random:llama-tiny'",
             f"--gin.msp.TrainConfig.steps={CLI_STEPS}", "--gin.msp.TrainConfig.batch_size=2",
             "--gin.msp.TrainConfig.checkpoint_every=2", f"--gin.msp.TrainConfig.eval_every={CLI_HELD_STEP}",
             "--gin.msp.experiment.max_dev_examples=2", "--gin.msp.MixtureConfig.prefix_length=2",
             "--gin.msp.MixtureConfig.attribute_length=2", "--gin.msp.InputShapes.max_text_len=48",
             "--gin.msp.InputShapes.max_target_len=24", "--quiet"]

# Runs `msp train`. With MSP_TEST_HOLD_STEP set, Orbax's last act of saving `checkpoints/<that step>` (renaming
# the complete temporary folder to its step number) waits forever, so the test can kill the run at the moment
# `checkpoints/<step>.orbax-checkpoint-tmp-*` exists and `best/<step>` is already committed. The hold only
# delays; what lands on disk is exactly what Orbax writes.
CLI_SCRIPT = r"""
import asyncio, os, sys
from orbax.checkpoint._src.path import atomicity

held = os.environ.get("MSP_TEST_HOLD_STEP")
finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def held_finalize(self):
  final = self._final_path
  if held and final.parent.name == "checkpoints" and final.name == held:
    await asyncio.sleep(3600)
  await finalize(self)

atomicity.AtomicRenameTemporaryPath.finalize = held_finalize
from msp_jax import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _msp_train(workdir: pathlib.Path, home: pathlib.Path, hold_step: int | None = None) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", MSP_HOME=str(home))
  if hold_step is not None:
    env["MSP_TEST_HOLD_STEP"] = str(hold_step)
  return subprocess.Popen([sys.executable, "-c", CLI_SCRIPT, "train", *CLI_FLAGS, "--workdir", str(workdir)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _saved_arrays(step_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """Every array of a saved step's `state` item, by tree path, as Orbax reads it back."""
  import jax
  import orbax.checkpoint as ocp
  restored = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(restored)}


def _assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
  assert got.keys() == want.keys()
  for name in want:
    assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes(), name


def test_msp_train_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_params(tmp_path):
  killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
  straight_run = _msp_train(straight_dir, tmp_path / "home")
  proc = _msp_train(killed_dir, tmp_path / "home", hold_step=CLI_HELD_STEP)
  deadline = time.monotonic() + 400
  partial = []
  while not partial:
    assert proc.poll() is None, f"run ended before the held save:\n{proc.stderr.read()[-3000:]}"
    assert time.monotonic() < deadline, "the held checkpoint save did not start within 400 s"
    time.sleep(0.05)
    if (killed_dir / "checkpoints").is_dir():
      partial = list((killed_dir / "checkpoints").glob(f"{CLI_HELD_STEP}.orbax-checkpoint-tmp*"))
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert (killed_dir / "best" / str(CLI_HELD_STEP) / "commit_success.txt").is_file()  # best/4 was complete
  assert _committed_steps(killed_dir) == [CLI_HELD_STEP - 2]

  out = _finish(_msp_train(killed_dir, tmp_path / "home"), timeout=600)
  assert '"resumed_from": 2' in out
  _finish(straight_run, timeout=600)
  assert not list((killed_dir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))  # the partial save is gone
  _assert_same_arrays(_saved_arrays(killed_dir / "checkpoints" / str(CLI_STEPS)),
                      _saved_arrays(straight_dir / "checkpoints" / str(CLI_STEPS)))
  best_steps = sorted(p.name for p in (straight_dir / "best").iterdir())
  assert sorted(p.name for p in (killed_dir / "best").iterdir()) == best_steps
  _assert_same_arrays(_saved_arrays(killed_dir / "best" / best_steps[-1]),
                      _saved_arrays(straight_dir / "best" / best_steps[-1]))
