"""SeqIO tasks for synthetic sets written by `msp run` / `msp denoise`, and a mixture of seed + synthetic.

For a synthetic set named NAME (default '<task>_synthetic'), with the usual vocabulary suffixes:
  NAME            split 'train': the kept synthetic examples (`<workdir>/synthetic/synthetic.jsonl`)
  NAME_seeds      split 'train': the exact seed set they were generated from (`seeds.jsonl`)
  NAME_mixture    a `seqio.Mixture` of the two, rates proportional to their sizes (seed + synthetic)
Features are those of every msp-jax task (`tasks/registration.py`): inputs, targets, attributes, uid.

`persist_synthetic` also records the set under `$MSP_HOME/synthetic/NAME.json` (a pointer to the files, written
atomically), so that `import tasks` registers it again in later processes.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings

import seqio

from msp_jax.data.schema import DomainData
from msp_jax.errors import ConfigError, DataError
from tasks import custom, registration

PathLike = str | os.PathLike
SEEDS_SUFFIX = "_seeds"
MIXTURE_SUFFIX = "_mixture"


def synthetic_dir(home: PathLike | None = None) -> pathlib.Path:
  return custom.msp_home() / "synthetic" if home is None else pathlib.Path(home) / "synthetic"


def _read_examples(path: pathlib.Path) -> tuple:
  from msp_jax import export  # pylint: disable=g-import-not-at-top
  return tuple(export.read_examples(path))


def _loader(name: str, path: pathlib.Path, source_task: str, data_dir: str | None):
  """A memoised loader of one JSONL file as the train split of a domain with the source task's ontology."""
  def load() -> DomainData:
    from msp_jax.data import catalog  # pylint: disable=g-import-not-at-top
    ontology = catalog.load_task_data(source_task, data_dir).ontology
    try:
      examples = _read_examples(path)
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{path}: not a file of examples ({type(e).__name__}: {e})") from e
    return DomainData(name=name, ontology=ontology, splits={"train": examples})
  return custom._memoised(load)  # pylint: disable=protected-access


def _count_lines(path: pathlib.Path) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def register_synthetic(name: str, *, records: PathLike, seeds: PathLike, source_task: str, task_kind: str,
                       data_dir: str | None = None) -> list[str]:
  """Registers NAME, NAME_seeds and NAME_mixture (see the module docstring) for every vocabulary.

  Files are checked to exist now and read when a dataset is first built (the ontology comes from
  `source_task`, the domain the set was generated for; `task_kind` is its kind, e.g. 'multi_intent').
  """
  from msp_jax.data import catalog  # pylint: disable=g-import-not-at-top
  if not custom._NAME_RE.fullmatch(name) or name in catalog.BENCHMARK_DOMAINS:  # pylint: disable=protected-access
    raise ConfigError(f"synthetic set name {name!r}: expected letters, digits and underscores, starting with a "
                      "letter, and not a benchmark task name")
  records, seeds = pathlib.Path(records), pathlib.Path(seeds)
  for role, path in (("synthetic records", records), ("seed", seeds)):
    if not path.is_file():
      raise DataError(f"{role} file {str(path)!r} does not exist")
  sizes = {}
  names = []
  for suffix, path in (("", records), (SEEDS_SUFFIX, seeds)):
    load = _loader(name + suffix, path, source_task, data_dir)
    catalog.register_loader(name + suffix, load, overwrite=True)
    sizes[suffix] = _count_lines(path)
    names += registration.register_domain_tasks(name + suffix, load, task_kind, splits=("train",),
                                                overwrite=True)
  for vocabulary_suffix in registration.vocabulary_suffixes():
    mixture = f"{name}{MIXTURE_SUFFIX}{vocabulary_suffix}"
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, [(f"{name}{SEEDS_SUFFIX}{vocabulary_suffix}", max(sizes[SEEDS_SUFFIX], 1)),
                                        (f"{name}{vocabulary_suffix}", max(sizes[""], 1))])
    names.append(mixture)
  return names


def persist_synthetic(name: str, *, records: PathLike, seeds: PathLike, source_task: str, task_kind: str,
                      data_dir: str | None = None, home: PathLike | None = None) -> list[str]:
  """`register_synthetic` now and, through a pointer file under $MSP_HOME/synthetic, in later processes."""
  names = register_synthetic(name, records=records, seeds=seeds, source_task=source_task, task_kind=task_kind,
                             data_dir=data_dir)
  from msp_jax.export import atomic_write_text  # pylint: disable=g-import-not-at-top
  pointer = {"name": name, "records": str(pathlib.Path(records).resolve()),
             "seeds": str(pathlib.Path(seeds).resolve()), "source_task": source_task, "task_kind": task_kind, "data_dir": data_dir}
  atomic_write_text(synthetic_dir(home) / f"{name}.json", json.dumps(pointer, indent=2) + "\n")
  return names


def register_persisted_synthetic(home: PathLike | None = None) -> list[str]:
  """Registers every persisted synthetic set; a broken or moved one is skipped with a warning naming it."""
  root = synthetic_dir(home)
  if not root.is_dir():
    return []
  names = []
  for pointer_path in sorted(root.glob("*.json")):
    try:
      pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
      names += register_synthetic(pointer["name"], records=pointer["records"], seeds=pointer["seeds"],
                                  source_task=pointer["source_task"], task_kind=pointer["task_kind"],
                                  data_dir=pointer.get("data_dir"))
    except (OSError, ValueError, KeyError, TypeError, ConfigError, DataError) as e:
      warnings.warn(f"skipping synthetic set {pointer_path}: {type(e).__name__}: {e}", stacklevel=2)
  return names
