"""Task names -> data: every domain msp-jax can load by name, the same way for every command.

A name is looked up, in order, among
  1. loaders registered in this process (`register_loader`, e.g. `tasks.register_domain`);
  2. the 16 benchmark domains, `<dataset>_<domain>`: `nlupp_banking`, `crossner_ai`, `topv2_weather`, ...
     Their files live under one data folder (`nlupp/`, `crossner/`, `topv2/`), given as `data_dir` or by the
     environment variable `MSP_DATA_DIR`;
  3. the example domains shipped in `msp_jax/examples/` (`front_desk`, the quickstart's hotel front desk);
  4. domains registered under `$MSP_HOME/domains` (`msp register`, `persist_domain`);
  5. synthetic sets registered under `$MSP_HOME/synthetic` by `msp run` / `msp denoise`: '<name>' is the kept
     synthetic examples and '<name>_seeds' the seed set they came from, each as a train split labelled with
     the ontology of the domain they were generated for.
Benchmark and example names cannot be registered (`check_domain_name`, `check_synthetic_name`). The on-disk
layout of the registry is in `msp_jax.data.registry`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

from msp_jax.data import crossner, custom, nlupp, registry, topv2
from msp_jax.data.schema import DomainData, TaskKind
from msp_jax.errors import ConfigError, DataError

DATA_DIR_ENV = "MSP_DATA_DIR"
SEEDS_SUFFIX = "_seeds"  # '<synthetic set>_seeds': the seed set a synthetic set was generated from


@dataclasses.dataclass(frozen=True)
class BenchmarkDomain:
  """How to read one benchmark task: `reader(data_dir, domain)`."""

  dataset: str
  domain: str
  reader: Callable[[str | os.PathLike, str], DomainData]

  def load(self, data_dir: str | os.PathLike) -> DomainData:
    return self.reader(data_dir, self.domain)


BENCHMARK_DOMAINS: dict[str, BenchmarkDomain] = {
    **{f"nlupp_{d}": BenchmarkDomain("nlupp", d, nlupp.read_nlupp) for d in nlupp.DOMAINS},
    **{f"crossner_{d}": BenchmarkDomain("crossner", d, crossner.read_crossner) for d in crossner.DOMAINS},
    **{f"topv2_{d}": BenchmarkDomain("topv2", d, topv2.read_topv2) for d in topv2.DOMAINS},
}
BENCHMARK_PREFIXES = ("nlupp_", "crossner_", "topv2_")

# Shipped example domains: name -> folder holding train/validation/test.jsonl and ontology.json.
EXAMPLE_DOMAINS: dict[str, pathlib.Path] = {
    "front_desk": pathlib.Path(__file__).resolve().parents[1] / "examples" / "front_desk",
}

# Task name -> zero-argument loader registered in this process (`register_loader`).
_LOADERS: dict[str, Callable[[], DomainData]] = {}


def _check_not_builtin(name: str) -> None:
  if name in BENCHMARK_DOMAINS:
    raise ConfigError(f"task name {name!r} is a benchmark task; choose another name")
  if name in EXAMPLE_DOMAINS:
    raise ConfigError(f"task name {name!r} is the example domain shipped with msp-jax "
                      f"({EXAMPLE_DOMAINS[name]}); choose another name")


def check_domain_name(name: str) -> None:
  """ConfigError unless `name` may name a registered domain: a valid SeqIO task name that is neither a
  shipped example domain's nor starts like a benchmark's (their SeqIO variants would clash)."""
  registry.check_name(name, "domain name")
  if name.startswith(BENCHMARK_PREFIXES):
    raise ConfigError(f"domain name {name!r} is reserved: names starting with {', '.join(BENCHMARK_PREFIXES)} "
                      "belong to the benchmarks")
  _check_not_builtin(name)


def check_synthetic_name(name: str) -> None:
  """ConfigError unless `name` may name a synthetic set (e.g. 'nlupp_hotels_synthetic')."""
  registry.check_name(name, "synthetic set name")
  _check_not_builtin(name)


def register_loader(name: str, loader: Callable[[], DomainData], *, overwrite: bool = False) -> None:
  """Makes `load_task_data(name)` call `loader()` in this process. Benchmark and example names cannot be
  taken; re-registering a name needs `overwrite=True`."""
  _check_not_builtin(name)
  if name in _LOADERS and not overwrite:
    raise ConfigError(f"task {name!r} is already registered (pass overwrite=True to replace it)")
  _LOADERS[name] = loader


def unregister_loader(name: str) -> None:
  """Removes a loader registered in this process (no error if it is absent)."""
  _LOADERS.pop(name, None)


def persist_domain(name: str, *, train: str | os.PathLike, validation: str | os.PathLike | None = None,
                   test: str | os.PathLike | None = None, ontology: str | os.PathLike | None = None,
                   task: TaskKind | None = None, overwrite: bool = False,
                   home: str | os.PathLike | None = None) -> tuple[pathlib.Path, DomainData]:
  """Registers a domain from files for this and every later process (`registry.persist_domain`).

  A loader of the same name registered in this process is dropped, so the name means the persisted files.

  Returns:
    (the domain's registry folder, its data).

  Raises:
    ConfigError: a bad, reserved or (without `overwrite`) already registered name.
    DataError: a missing or malformed file; nothing is written then.
  """
  check_domain_name(name)
  folder, data = registry.persist_domain(name, train=train, validation=validation, test=test, ontology=ontology,
                                         task=task, overwrite=overwrite, home=home)
  unregister_loader(name)
  return folder, data


def load_example_domain(name: str) -> DomainData:
  """A shipped example domain (`EXAMPLE_DOMAINS`)."""
  folder = EXAMPLE_DOMAINS[name]
  return custom.read_custom(name, train=folder / "train.jsonl", validation=folder / "validation.jsonl",
                            test=folder / "test.jsonl", ontology=folder / "ontology.json")


def load_synthetic(synthetic: registry.SyntheticSet, seeds: bool = False) -> DomainData:
  """A synthetic set's kept examples (or, with `seeds`, its seed set) as the train split of a domain named
  like its task ('<name>' or '<name>_seeds'), labelled with the ontology of the domain it was generated for."""
  from msp_jax.synthesis import export  # pylint: disable=g-import-not-at-top  (the format export writes)

  path = synthetic.seeds if seeds else synthetic.records
  ontology = load_task_data(synthetic.source_task, synthetic.data_dir).ontology
  try:
    examples = tuple(export.read_examples(path))
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"{path}: not a file of examples ({type(e).__name__}: {e})") from e
  return DomainData(name=synthetic.name + (SEEDS_SUFFIX if seeds else ""), ontology=ontology,
                    splits={"train": examples})


def _registered_synthetic(name: str) -> DomainData | None:
  """'<set>' or '<set>_seeds' of a synthetic set registered under $MSP_HOME, or None."""
  synthetic = registry.registered_synthetic(name)
  if synthetic is not None:
    return load_synthetic(synthetic)
  if name.endswith(SEEDS_SUFFIX):
    synthetic = registry.registered_synthetic(name[:-len(SEEDS_SUFFIX)])
    if synthetic is not None:
      return load_synthetic(synthetic, seeds=True)
  return None


def known_tasks() -> tuple[str, ...]:
  """Benchmark task names, then every other name `load_task_data` knows, each group sorted."""
  synthetic = []
  for pointer in registry.synthetic_pointers():
    synthetic += [pointer.stem, pointer.stem + SEEDS_SUFFIX]
  others = {*_LOADERS, *EXAMPLE_DOMAINS, *registry.domain_names(), *synthetic}
  return tuple(sorted(BENCHMARK_DOMAINS)) + tuple(sorted(others))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
  """`data_dir`, else `$MSP_DATA_DIR`; ConfigError when neither is set or the folder is absent."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
      raise ConfigError(f"no data folder: pass --data-dir or set {DATA_DIR_ENV} to the folder holding "
                        "nlupp/, crossner/ and topv2/")
  path = pathlib.Path(data_dir)
  if not path.is_dir():
    raise ConfigError(f"data folder {path} does not exist (expected nlupp/, crossner/ and topv2/ inside)")
  return path


def load_task_data(task_name: str, data_dir: str | os.PathLike | None = None) -> DomainData:
  """Reads every split of the task named `task_name` (lookup order in the module docstring).

  Raises ConfigError for an unknown name (listing the known ones) or a missing data folder, and
  DataError for a malformed file.
  """
  if task_name in _LOADERS:
    return _LOADERS[task_name]()
  if task_name in BENCHMARK_DOMAINS:
    return BENCHMARK_DOMAINS[task_name].load(resolve_data_dir(data_dir))
  if task_name in EXAMPLE_DOMAINS:
    return load_example_domain(task_name)
  if registry.NAME_PATTERN.fullmatch(task_name):
    found = registry.read_domain(task_name) or _registered_synthetic(task_name)
    if found is not None:
      return found
  raise ConfigError(f"unknown task {task_name!r}; known tasks: {', '.join(known_tasks())}")
