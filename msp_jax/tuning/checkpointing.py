"""Orbax checkpoints of the trainable state (soft prompts + mixer + optimizer) with a JSON manifest.

A checkpoint step directory holds `state/` (Orbax: trainable params, optimizer state, step, data position)
and `manifest/` (JSON: backbone, ontology, mixer, prompt lengths). The manifest is what makes a checkpoint
self-describing: restoring it against another backbone or ontology is refused with a message saying which
field differs. The frozen backbone is never saved here: it stays in its own checkpoint.

A run killed at any moment must resume. Orbax writes a step under a temporary name and renames it when
complete, so a kill leaves either a whole step or a `<step>.orbax-checkpoint-tmp-*` folder (removed when the
training managers open). A resumed run replays the steps after the one it restored, so saving a step that is
already on disk replaces it (a kill can land after `best/<step>` was committed and before
`checkpoints/<step>` was). A step whose files no longer read back (a truncated tensor file) is not trusted:
training resumes from the newest step that does and sets the unreadable one aside, saying which.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from msp_jax.errors import CheckpointError

MANIFEST_VERSION = 1
# Manifest fields that must agree between a checkpoint and the run restoring it.
IDENTITY_FIELDS = ("backbone", "embed_dim", "ontology", "mixer", "prefix_length", "attribute_length",
                   "max_attributes", "mixture", "optimizer")


# A step folder that did not read back is renamed to `<step>.unreadable` (Orbax lists only numbered folders).
UNREADABLE_SUFFIX = ".unreadable"


class UnreadableCheckpointError(CheckpointError):
  """A checkpoint step whose files do not read back (truncated, missing, not Orbax's); an older one may."""


def open_manager(directory: str | os.PathLike, *, max_to_keep: int = 2,
                 remove_partial_saves: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` (created if missing) keeping the newest `max_to_keep` steps.

  `remove_partial_saves` deletes the temporary folders of saves that a kill interrupted (in the background;
  the next save waits for it): only for the process that writes `directory` (training), never for a reader
  that may run beside it.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         cleanup_tmp_directories=remove_partial_saves)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, manifest: dict) -> None:
  """Saves `state` (a pytree of arrays) and `manifest` at `step`; Orbax commits atomically.

  A step already on disk is replaced: a resumed run recomputes it from the same state (see the module doc).
  """
  manifest = {"version": MANIFEST_VERSION, **manifest}
  if step in manager.all_steps():
    manager.delete(step)
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
  """Restores the state at `step` shaped like `like`, after checking its manifest against this run.

  Raises:
    UnreadableCheckpointError: the step's files do not read back (one line naming the step and the reason).
    CheckpointError: the step was written by a run with another backbone, ontology, mixer... (`check_manifest`).
  """
  where = str(pathlib.Path(manager.directory) / str(step))
  try:
    manifest = read_manifest(manager, step)
  except Exception as e:  # Orbax and TensorStore raise bare Exceptions for damaged files.
    raise UnreadableCheckpointError(f"{where}: unreadable checkpoint manifest ({_reason(e)})") from e
  check_manifest(manifest, expected_manifest, where)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # as above: a truncated tensor file surfaces as a bare Exception
    raise UnreadableCheckpointError(f"{where}: cannot read the training state ({_reason(e)})") from e
  return restored["state"], manifest


@dataclasses.dataclass(frozen=True)
class Resumed:
  """What `restore_newest_readable` found: the state at `step`, its manifest, and one line per newer step
  that did not read back and was set aside (empty when the newest step read back)."""

  step: int
  state: Any
  manifest: dict
  set_aside: tuple[str, ...]


def restore_newest_readable(manager: ocp.CheckpointManager, like: Any, expected_manifest: dict
                            ) -> Resumed | None:
  """Restores the newest step of `manager` that reads back; None when there is no step at all.

  Newer steps that do not read back are renamed `<step>.unreadable` (kept for inspection, out of Orbax's
  sight, so the resumed run can write those steps again) and each gets a line in `Resumed.set_aside`. A
  manifest that differs from this run's is never skipped over: it raises `CheckpointError`, as does a
  folder where no step reads back (nothing is renamed then).
  """
  unreadable: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state, manifest = restore(manager, step, like, expected_manifest)
    except UnreadableCheckpointError as e:
      unreadable.append((step, str(e)))
      continue
    notes = []
    for bad_step, message in unreadable:
      moved = _set_aside(pathlib.Path(manager.directory) / str(bad_step))
      notes.append(f"{message}; resumed from step {step}, the newest checkpoint that reads back "
                   f"(the unreadable step is now {moved})")
    if unreadable:
      if jax.process_count() > 1:  # every process renames nothing until process 0 has
        multihost_utils.sync_global_devices("msp_checkpoint_set_aside")
      manager.reload()
    return Resumed(step, state, manifest, tuple(notes))
  if unreadable:
    raise UnreadableCheckpointError(
        f"{manager.directory}: no checkpoint step reads back ({'; '.join(m for _, m in unreadable)}); "
        "move the folder away to train from step 0")
  return None


def _set_aside(step_dir: pathlib.Path) -> pathlib.Path:
  """Renames an unreadable step folder to `<step>.unreadable` (`.unreadable-2`... if taken); returns it.

  Only process 0 renames (the folder is shared by all processes of a run); the others return the name.
  """
  target = step_dir.with_name(step_dir.name + UNREADABLE_SUFFIX)
  attempt = 1
  while target.exists():
    attempt += 1
    target = step_dir.with_name(f"{step_dir.name}{UNREADABLE_SUFFIX}-{attempt}")
  if jax.process_index() == 0:
    step_dir.rename(target)
  return target


def _reason(error: BaseException, limit: int = 240) -> str:
  """The first line of the innermost cause, shortened: Orbax wraps TensorStore's one-line reason in a
  message that dumps the whole array spec over dozens of lines."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= limit else text[:limit] + "..."


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
