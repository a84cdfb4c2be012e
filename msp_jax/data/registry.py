"""The registry under `$MSP_HOME` (default `~/.msp_jax`): user domains and synthetic sets kept across processes.

  domains/<name>/domain.json     {"format_version", "name", "task", "splits": {split: file}, "ontology": file|null,
                                  "sources": {split or 'ontology': the original path}}
  domains/<name>/train.jsonl ... copies of the files as given (the extension picks JSONL or CSV)
  domains/<name>/ontology.json   copy of the ontology, when one was given
  synthetic/<name>.json          a pointer to a run's exported set: {"name", "records", "seeds", "source_task",
                                  "task_kind", "data_dir"} (absolute paths to synthetic.jsonl and seeds.jsonl)

A domain is copied into a staging folder beside its final place and renamed into place. Writers hold an
exclusive lock on the `domains/` folder while they swap a domain folder in (so two `msp register --overwrite`
of one name run one after the other) and readers hold a shared one while they read a domain's files (so they
never see a half-moved folder, or the old metadata with the new files). Names starting with '.' are staging
and retired folders and are never listed.

This module stores and reads; `msp_jax.data.catalog` decides which names a registered domain may take.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import uuid
from typing import Iterator

from msp_jax.data import custom
from msp_jax.data.schema import DomainData, TaskKind
from msp_jax.errors import ConfigError, DataError
from msp_jax.files import atomic_write_text

try:
  import fcntl
except ImportError:  # Windows: no advisory locks; registering stays atomic, concurrent overwrites are not ordered.
  fcntl = None

PathLike = str | os.PathLike
HOME_ENV = "MSP_HOME"
FORMAT_VERSION = 1
METADATA_FILE = "domain.json"
SPLITS = ("train", "validation", "test")
# A SeqIO task name and a folder name: a letter, then letters, digits, '_'.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def msp_home() -> pathlib.Path:
  """`$MSP_HOME`, default `~/.msp_jax`."""
  return pathlib.Path(os.environ.get(HOME_ENV) or pathlib.Path.home() / ".msp_jax")


def domains_dir(home: PathLike | None = None) -> pathlib.Path:
  return (msp_home() if home is None else pathlib.Path(home)) / "domains"


def synthetic_dir(home: PathLike | None = None) -> pathlib.Path:
  return (msp_home() if home is None else pathlib.Path(home)) / "synthetic"


def check_name(name: str, what: str = "domain name") -> None:
  """ConfigError unless `name` can be both a SeqIO task name and a folder name."""
  if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
    raise ConfigError(f"{what} {name!r} is invalid: use a letter then letters, digits or '_' "
                      "(it becomes a SeqIO task name and a file or folder name)")


@contextlib.contextmanager
def _locked(folder: pathlib.Path, *, exclusive: bool) -> Iterator[None]:
  """An advisory lock on `folder` itself (no lock file to leave behind); nothing to lock if it is absent."""
  if fcntl is None or not folder.is_dir():
    yield
    return
  fd = os.open(folder, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    yield
  finally:
    os.close(fd)  # Releases the lock.


# ------------------------------------------------------------------------------------------- domains


@dataclasses.dataclass(frozen=True)
class RegisteredDomain:
  """A domain folder's metadata (`domain.json`): enough to register it without reading its examples."""

  name: str
  task: TaskKind
  folder: pathlib.Path
  split_files: dict[str, str]  # split -> file name inside `folder`
  ontology_file: str | None

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(s for s in SPLITS if s in self.split_files)

  def read(self) -> DomainData:
    """Reads the copied files (DataError names a missing or malformed one)."""
    files = {split: self.folder / f for split, f in self.split_files.items()}
    for role, path in files.items():
      if not path.is_file():
        raise DataError(f"{path}: the {role} file of registered domain {self.name!r} is missing; re-run "
                        "`msp register` for it")
    ontology = self.folder / self.ontology_file if self.ontology_file else None
    return custom.read_custom(self.name, train=files.get("train"), validation=files.get("validation"),
                              test=files.get("test"), ontology=ontology, task=self.task)


def domain_names(home: PathLike | None = None) -> tuple[str, ...]:
  """The names of the registered domain folders, sorted (their metadata is not read)."""
  root = domains_dir(home)
  if not root.is_dir():
    return ()
  return tuple(sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()))


def read_metadata(folder: pathlib.Path) -> RegisteredDomain:
  """A domain folder's `domain.json`; DataError saying how to repair it when unreadable."""
  meta_path = folder / METADATA_FILE
  try:
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    domain = RegisteredDomain(name=metadata["name"], task=metadata["task"], folder=folder,
                              split_files=dict(metadata["splits"]), ontology_file=metadata.get("ontology"))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise DataError(f"{meta_path}: unreadable domain metadata ({type(e).__name__}: {e}); "
                    "re-run `msp register` for this domain") from None
  if domain.name != folder.name:
    raise DataError(f"{meta_path}: names domain {domain.name!r} but sits in folder {folder.name!r}")
  if "train" not in domain.split_files:
    raise DataError(f"{meta_path}: names no train file; re-run `msp register` for this domain")
  return domain


def read_domain(name: str, home: PathLike | None = None) -> DomainData | None:
  """Registered domain `name` (its metadata and files read under one shared lock), or None if absent."""
  root = domains_dir(home)
  with _locked(root, exclusive=False):
    folder = root / name
    return read_metadata(folder).read() if folder.is_dir() else None


def _given_files(files: dict[str, PathLike | None]) -> dict[str, pathlib.Path]:
  """{split or 'ontology': path or None} -> the given paths, each checked to be an existing file."""
  found = {}
  for role, path in files.items():
    if path is None:
      continue
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise DataError(f"{role} file {str(path)!r} does not exist" if not path.exists()
                      else f"{role} file {str(path)!r} is not a file")
    found[role] = path
  if "train" not in found:
    raise DataError("a domain needs a train file")
  return found


def read_files(name: str, *, train: PathLike, validation: PathLike | None = None, test: PathLike | None = None,
               ontology: PathLike | None = None, task: TaskKind | None = None) -> DomainData:
  """A domain from files outside the registry (checked to exist, then read by `custom.read_custom`)."""
  files = _given_files({"train": train, "validation": validation, "test": test, "ontology": ontology})
  return custom.read_custom(name, train=files["train"], validation=files.get("validation"),
                            test=files.get("test"), ontology=files.get("ontology"), task=task)


def persist_domain(name: str, *, train: PathLike, validation: PathLike | None = None,
                   test: PathLike | None = None, ontology: PathLike | None = None, task: TaskKind | None = None,
                   overwrite: bool = False, home: PathLike | None = None) -> tuple[pathlib.Path, DomainData]:
  """Validates the files, copies them into `domains/<name>/` and swaps that folder into place.

  Returns:
    (the domain's folder, its data).

  Raises:
    ConfigError: a bad name, or a name already registered (unless `overwrite`).
    DataError: a missing or malformed file (nothing is written then).
  """
  check_name(name)
  root = domains_dir(home)
  final = root / name
  if final.exists() and not overwrite:
    raise _taken(final)
  files = _given_files({"train": train, "validation": validation, "test": test, "ontology": ontology})
  domain_data = read_files(name, **files, task=task)  # Validate before anything is written.

  root.mkdir(parents=True, exist_ok=True)
  staging = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
  staging.mkdir()  # Not mkdtemp: its 0700 mode would stick to the final folder.
  try:
    copied = {}
    for role, path in files.items():
      copied[role] = f"{role}{''.join(path.suffixes[-1:]).lower()}"
      shutil.copyfile(path, staging / copied[role])
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "task": domain_data.ontology.task,
        "splits": {s: copied[s] for s in SPLITS if s in copied},
        "ontology": copied.get("ontology"),
        "sources": {role: str(path.resolve()) for role, path in files.items()},
    }
    atomic_write_text(staging / METADATA_FILE, json.dumps(metadata, indent=2))
    retired = _swap_into_place(staging, final, overwrite)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if retired is not None:
    shutil.rmtree(retired, ignore_errors=True)  # Out of the lock: nobody reads a '.'-named folder.
  return final, domain_data


def _taken(final: pathlib.Path) -> ConfigError:
  return ConfigError(f"domain {final.name!r} is already registered at {final}; pass --overwrite "
                     "(overwrite=True) to replace it")


def _swap_into_place(staging: pathlib.Path, final: pathlib.Path, overwrite: bool) -> pathlib.Path | None:
  """Renames `staging` to `final` under the registry's exclusive lock; returns the retired old folder, if any."""
  with _locked(final.parent, exclusive=True):
    retired = None
    if final.exists():
      if not overwrite:  # Registered by another process since the first check.
        raise _taken(final)
      retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
      os.rename(final, retired)
    try:
      os.rename(staging, final)
    except OSError:
      if retired is not None:
        os.rename(retired, final)  # Put the previous version back.
      raise
  return retired


# ------------------------------------------------------------------------------------------ synthetic


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
  """A run's exported synthetic set: its kept records and the seed set they were generated from.

  `source_task` is the domain it was generated for (its ontology labels the set); `task_kind` is that
  domain's kind (e.g. 'multi_intent'); `data_dir` is where that domain's files are, for benchmarks.
  """

  name: str
  records: pathlib.Path  # synthetic.jsonl
  seeds: pathlib.Path    # seeds.jsonl
  source_task: str
  task_kind: str
  data_dir: str | None = None

  def to_json(self) -> dict:
    return {"name": self.name, "records": str(pathlib.Path(self.records).resolve()),
            "seeds": str(pathlib.Path(self.seeds).resolve()), "source_task": self.source_task,
            "task_kind": self.task_kind, "data_dir": self.data_dir}

  @classmethod
  def from_json(cls, pointer: dict) -> SyntheticSet:
    return cls(name=pointer["name"], records=pathlib.Path(pointer["records"]),
               seeds=pathlib.Path(pointer["seeds"]), source_task=pointer["source_task"],
               task_kind=pointer["task_kind"], data_dir=pointer.get("data_dir"))


def persist_synthetic(synthetic: SyntheticSet, home: PathLike | None = None) -> pathlib.Path:
  """Writes the set's pointer file (atomically, replacing an older one of the same name); returns its path."""
  check_name(synthetic.name, "synthetic set name")
  path = synthetic_dir(home) / f"{synthetic.name}.json"
  atomic_write_text(path, json.dumps(synthetic.to_json(), indent=2) + "\n")
  return path


def synthetic_pointers(home: PathLike | None = None) -> tuple[pathlib.Path, ...]:
  """The pointer files of the registered synthetic sets, sorted."""
  root = synthetic_dir(home)
  return tuple(sorted(root.glob("*.json"))) if root.is_dir() else ()


def read_synthetic(pointer_path: pathlib.Path) -> SyntheticSet:
  """A pointer file -> SyntheticSet; DataError naming the file when it is unreadable."""
  try:
    return SyntheticSet.from_json(json.loads(pointer_path.read_text(encoding="utf-8")))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise DataError(f"{pointer_path}: unreadable synthetic-set pointer ({type(e).__name__}: {e})") from None


def registered_synthetic(name: str, home: PathLike | None = None) -> SyntheticSet | None:
  """The synthetic set registered as `name`, or None."""
  path = synthetic_dir(home) / f"{name}.json"
  return read_synthetic(path) if NAME_PATTERN.fullmatch(name) and path.is_file() else None
