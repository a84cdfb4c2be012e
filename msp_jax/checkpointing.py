"""Orbax checkpoints of the trainable state (soft prompts + mixer + optimizer) with a JSON manifest.

A checkpoint step directory holds `state/` (Orbax: trainable params, optimizer state, step, data position)
and `manifest/` (JSON: backbone, ontology, mixer, prompt lengths). The manifest is what makes a checkpoint
self-describing: restoring it against another backbone or ontology is refused with a message saying which
field differs. The frozen backbone is never saved here: it stays in its own checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from msp_jax.errors import CheckpointError

MANIFEST_VERSION = 1
# Manifest fields that must agree between a checkpoint and the run restoring it.
IDENTITY_FIELDS = ("backbone", "embed_dim", "ontology", "mixer", "prefix_length", "attribute_length",
                   "max_attributes", "mixture", "optimizer")


def open_manager(directory: str | os.PathLike, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` (created if missing) keeping the newest `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, manifest: dict) -> None:
  """Saves `state` (a pytree of arrays) and `manifest` at `step`; Orbax commits atomically."""
  manifest = {"version": MANIFEST_VERSION, **manifest}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             manifest=ocp.args.JsonSave(manifest)), force=True)
  manager.wait_until_finished()


def read_manifest(manager: ocp.CheckpointManager, step: int) -> dict:
  restored = manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
  return dict(restored["manifest"])


def check_manifest(found: dict, expected: dict, where: str) -> None:
  """Raises CheckpointError naming the first identity field where a checkpoint differs from this run.

  Dict fields (the whole `mixture`) are compared key by key so the message names e.g. `mixture.grouping`.
  A field the checkpoint lacks (written by an older version) is not compared.
  """
  for field in IDENTITY_FIELDS:
    if field not in expected or field not in found:
      continue
    want, got = json.loads(json.dumps(expected[field])), found[field]  # tuples -> lists, as saved
    if isinstance(want, dict) and isinstance(got, dict):
      differing = [k for k in want if k in got and want[k] != got[k]]
      if differing:
        _refuse(where, f"{field}.{differing[0]}", got[differing[0]], want[differing[0]])
    elif got != want:
      _refuse(where, field, got, want)


def _refuse(where: str, field: str, found: Any, expected: Any) -> None:
  raise CheckpointError(
      f"{where}: checkpoint was trained with {field}={_short(found)} but this run uses {field}={_short(expected)}; "
      "use a matching checkpoint or a new workdir")


def restore(manager: ocp.CheckpointManager, step: int, like: Any, expected_manifest: dict) -> tuple[Any, dict]:
  """Restores the state at `step` shaped like `like`, after checking its manifest against this run."""
  where = str(pathlib.Path(manager.directory) / str(step))
  try:
    manifest = read_manifest(manager, step)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise CheckpointError(f"{where}: unreadable checkpoint manifest ({e})") from e
  check_manifest(manifest, expected_manifest, where)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise CheckpointError(f"{where}: cannot restore the training state ({e})") from e
  return restored["state"], manifest


def restore_exported(directory: str | os.PathLike, like: Any, expected_manifest: dict) -> tuple[Any, dict]:
  """Restores the newest step of an exported prompt checkpoint directory (see `save`)."""
  path = pathlib.Path(directory)
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such prompt checkpoint directory")
  manager = open_manager(path)
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"{path}: holds no prompt checkpoint (expected numbered step folders from `msp train`)")
  return restore(manager, step, like, expected_manifest)


def _short(value: Any, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."
