"""Damaged or half-written prompt checkpoints: a step is saved again over itself, partial saves are cleared,
and a checkpoint whose tensor file was truncated is reported in one line and skipped for the newest intact
step, never silently."""

from __future__ import annotations

import pathlib
import shutil
import time

import jax
import numpy as np
import pytest

import toy_domain
from msp_jax.backbones import load_backbone
from msp_jax.errors import CheckpointError
from msp_jax.tuning import checkpointing, training
from msp_jax.tuning.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.tuning.msp_model import MixtureConfig, MspModel

STEPS = 6
CONFIG = training.TrainConfig(steps=STEPS, batch_size=4, learning_rate=0.3, schedule="cosine", warmup_steps=1,
                              checkpoint_every=2, eval_every=3, log_every=1, seed=7)
MANIFEST = {"backbone": "random:llama-tiny"}


def _setup():
  backbone = load_backbone("random:llama-tiny").backbone
  model = MspModel(backbone, toy_domain.ONTOLOGY, MixtureConfig(mixer="attention", prefix_length=3,
                                                                attribute_length=4, max_attributes=2))
  tok = backbone.tokenizer
  examples = list(toy_domain.EXAMPLES)
  common = dict(exemplar_pool=examples, ontology=toy_domain.ONTOLOGY, serialize=lambda e: e.text,
                encode=tok.encode, eos_id=tok.eos_id, pad_id=tok.pad_id, batch_size=4,
                shapes=InputShapes(max_attributes=2, max_text_len=48, max_target_len=24))
  return backbone, model, make_batch_fn(examples, seed=1, **common), fixed_batches(examples[:4], **common)


def _train(workdir: pathlib.Path) -> training.TrainResult:
  backbone, model, batch_at, dev = _setup()
  return training.train(model, backbone.params, batch_at, dev, CONFIG, workdir, MANIFEST, show_progress=False)


def _host(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _truncate_largest_tensor_file(step_dir: pathlib.Path) -> pathlib.Path:
  data_files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  largest = max(data_files, key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(largest.stat().st_size // 3)
  return largest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
  """A finished run (checkpoints 4 and 6 kept) and its final state on the host."""
  workdir = tmp_path_factory.mktemp("trained")
  result = _train(workdir)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6"]
  return workdir, _host(result.state)


def test_saving_a_step_that_exists_replaces_it(tmp_path):
  manager = checkpointing.open_manager(tmp_path / "best", max_to_keep=1)
  rng = np.random.default_rng()
  first, second = ({"params": {"w": rng.normal(size=(3, 5)).astype(np.float32)}} for _ in range(2))
  checkpointing.save(manager, 4, first, {"backbone": "b", "step": 4})
  checkpointing.save(manager, 4, second, {"backbone": "b", "step": 4, "dev_loss": 1.5})
  restored, manifest = checkpointing.restore(checkpointing.open_manager(tmp_path / "best"), 4, second,
                                             {"backbone": "b"})
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), second["params"]["w"])
  assert manifest["dev_loss"] == 1.5


def test_a_training_manager_clears_partial_saves_and_a_reader_leaves_them(tmp_path):
  partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1796194814"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "_METADATA").write_text("{}")
  checkpointing.open_manager(tmp_path / "checkpoints")
  assert partial.is_dir()
  manager = checkpointing.open_manager(tmp_path / "checkpoints", remove_partial_saves=True)
  deadline = time.monotonic() + 30  # Orbax clears them in the background; a save waits for it
  while partial.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not partial.exists() and manager.all_steps() == []


def test_a_truncated_latest_checkpoint_resumes_from_the_older_one_and_says_so(trained, tmp_path, capsys):
  source, final = trained
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  _truncate_largest_tensor_file(workdir / "checkpoints" / "6")
  capsys.readouterr()

  result = _train(workdir)

  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert err[0].startswith(f"warning: {workdir / 'checkpoints' / '6'}: cannot read the training state (")
  assert err[0].endswith(f"; resumed from step 4, the newest checkpoint that reads back (the unreadable step "
                         f"is now {workdir / 'checkpoints' / '6.unreadable'})")
  assert result.resumed_from == 4
  got = _host(result.state)
  assert got.keys() == final.keys()
  for name in final:
    assert got[name].tobytes() == final[name].tobytes(), name
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6", "6.unreadable"]


def test_no_readable_checkpoint_is_one_line_and_renames_nothing(trained, tmp_path):
  source, _ = trained
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  for step in ("4", "6"):
    _truncate_largest_tensor_file(workdir / "checkpoints" / step)
  with pytest.raises(checkpointing.UnreadableCheckpointError) as e:
    _train(workdir)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"{workdir / 'checkpoints'}: no checkpoint step reads back "
                            f"({workdir / 'checkpoints' / '6'}: cannot read the training state (")
  assert f"; {workdir / 'checkpoints' / '4'}: cannot read the training state (" in message
  assert message.endswith("move the folder away to train from step 0")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6"]


def test_a_truncated_exported_checkpoint_is_one_line(trained, tmp_path):
  source, _ = trained
  best = tmp_path / "best"
  shutil.copytree(source / "best", best)
  (step_dir,) = [p for p in best.iterdir() if p.name.isdigit()]
  _truncate_largest_tensor_file(step_dir)
  backbone, model, _, _ = _setup()
  like = {"params": model.init(jax.random.PRNGKey(0), backbone.params)}
  with pytest.raises(CheckpointError) as e:
    checkpointing.restore_exported(best, like, MANIFEST)
  assert "\n" not in str(e.value) and str(e.value).startswith(f"{step_dir}: cannot read the training state (")
