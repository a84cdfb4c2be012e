"""Stage caching for `msp run`: a finished stage leaves a record, and re-running it with the same inputs skips it.

A stage (train, generate, denoise, downstream) writes `<workdir>/stages/<name>.json` (atomically) when it
finishes:

  {"stage": name, "fingerprint": sha256 of its configuration, "outputs": [paths], "summary": {...},
   "seconds": wall time}

The fingerprint of a stage covers its own configuration *and* the fingerprints of the stages it reads from, so
changing the training configuration re-runs generation and denoising too. A stage is skipped only when its
record exists, the fingerprint matches and every output it names still exists; `force` re-runs it anyway.
What each stage puts in `summary` is in `msp_jax.run.summaries`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from msp_jax import distributed, runtime
from msp_jax.config_fields import fingerprinted_fields
from msp_jax.errors import ConfigError, DataError
from msp_jax.files import atomic_write_text


def fingerprint(config: Mapping[str, Any]) -> str:
  """A stable hash of a JSON-able configuration (dataclasses and paths are turned into plain values)."""
  text = json.dumps(config, sort_keys=True, default=_plain)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _plain(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return fingerprinted_fields(value)  # json calls back here for the nested dataclasses
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  return repr(value)


@dataclasses.dataclass(frozen=True)
class StageRecord:
  """A finished stage: what it ran with (fingerprint), what it wrote (outputs) and what it found (summary)."""

  stage: str
  fingerprint: str
  outputs: tuple[str, ...]
  summary: dict[str, Any]  # JSON; typed per stage in `msp_jax.run.summaries`
  seconds: float | None


def record_path(workdir: str | os.PathLike, name: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "stages" / f"{name}.json"


def read_record(workdir: str | os.PathLike, name: str) -> StageRecord | None:
  """The finished-stage record, or None when the stage has not finished in this workdir."""
  path = record_path(workdir, name)
  if not path.is_file():
    return None
  try:
    raw = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: corrupt stage record ({e.msg}); delete it to re-run stage {name!r}")
  if not isinstance(raw, dict):
    raise DataError(f"{path}: stage record is not a JSON object; delete it to re-run stage {name!r}")
  for field in ("fingerprint", "outputs", "summary"):
    if field not in raw:
      raise DataError(f"{path}: stage record lacks field {field!r}; delete it to re-run stage {name!r}")
  return StageRecord(stage=raw.get("stage", name), fingerprint=raw["fingerprint"], outputs=tuple(raw["outputs"]),
                     summary=raw["summary"], seconds=raw.get("seconds"))


def cached_record(workdir: str | os.PathLike, name: str, stage_fingerprint: str) -> StageRecord | None:
  """The record of a finished stage with this fingerprint whose outputs all still exist, else None."""
  record = read_record(workdir, name)
  if record is None or record.fingerprint != stage_fingerprint:
    return None
  if not all(pathlib.Path(p).exists() for p in record.outputs):
    return None
  return record


def write_record(workdir: str | os.PathLike, name: str, stage_fingerprint: str,
                 outputs: Sequence[str | os.PathLike], summary: Mapping[str, Any], seconds: float) -> StageRecord:
  record = StageRecord(stage=name, fingerprint=stage_fingerprint, outputs=tuple(os.fspath(p) for p in outputs),
                       summary=dict(summary), seconds=round(seconds, 2))
  raw = {"stage": record.stage, "fingerprint": record.fingerprint, "outputs": list(record.outputs),
         "summary": record.summary, "seconds": record.seconds}
  atomic_write_text(record_path(workdir, name), json.dumps(raw, indent=2, default=_plain) + "\n")
  return record


def run_stage(workdir: str | os.PathLike, name: str, stage_fingerprint: str,
              compute: Callable[[], tuple[Mapping[str, Any], Sequence[str | os.PathLike]]], *,
              force: bool = False, report: Callable[[str], None] = print) -> StageRecord:
  """Runs `compute() -> (summary, outputs)` unless a matching finished record exists; returns the record.
  Afterwards the heap's free pages go back to the system (`runtime.release_freed_memory`): the next stage is
  another kind of work, and a long run would otherwise hold every stage's high-water mark."""
  record = None if force else cached_record(workdir, name, stage_fingerprint)
  if record is not None:
    report(f"[{name}] already done in {record_path(workdir, name).parent.parent} "
           f"(fingerprint {stage_fingerprint}), skipping")
    return record
  previous = read_record(workdir, name)
  if previous is not None and not force:
    report(f"[{name}] configuration or outputs changed since the last run: running again")
  else:
    report(f"[{name}] running")
  start = time.perf_counter()
  try:
    summary, outputs = compute()
  finally:
    runtime.release_freed_memory()
  record = write_record(workdir, name, stage_fingerprint, outputs, summary, time.perf_counter() - start)
  report(f"[{name}] done in {record.seconds:.0f} s")
  return record


def run_stage_coordinated(workdir: str | os.PathLike, name: str, stage_fingerprint: str,
                          compute: Callable[[], tuple[Mapping[str, Any], Sequence[str | os.PathLike]]], *,
                          force: bool = False, everyone_computes: bool = False,
                          report: Callable[[str], None] = print) -> StageRecord:
  """`run_stage` in a multi-process run: only the coordinator (process 0) writes the record; every process
  returns it.

  Whether the stage runs is the coordinator's call (its cache, or `force`), sent to all: a process that
  skipped a stage the others run would leave them waiting for its share. The other processes run `compute`
  too when `everyone_computes` (their share of the work; the summary and the files are the coordinator's to
  write), then all meet at a barrier once the coordinator has written, and the others read its record from
  the workdir, which every host must share.
  """
  coordinator = distributed.is_coordinator()
  runs = False
  if everyone_computes:
    runs = coordinator and (force or cached_record(workdir, name, stage_fingerprint) is None)
    runs = bool(multihost_utils.broadcast_one_to_all(np.int32(runs)))
  if coordinator:
    record = run_stage(workdir, name, stage_fingerprint, compute, force=force, report=report)
  elif runs:
    compute()
  multihost_utils.sync_global_devices(f"msp_stage_{name}_written")
  if coordinator:
    return record
  record = read_record(workdir, name)
  if record is None or record.fingerprint != stage_fingerprint:
    raise ConfigError(f"{record_path(workdir, name)}: process {jax.process_index()} does not see the record "
                      f"process 0 wrote for stage {name!r}; the workdir must be on a filesystem every host shares "
                      "(NFS, Lustre, ...)")
  return record
