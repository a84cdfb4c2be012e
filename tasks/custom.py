"""SeqIO tasks for the catalog's non-benchmark domains: the shipped example domains, the domains registered
under `$MSP_HOME/domains` (`msp register`), and domains registered for this process only.

Each gets the SeqIO tasks '<name>' (T5 vocabulary), '<name>_smollm2', ... like a benchmark domain. Where a domain
lives and which names it may take is the catalog's business (`msp_jax.data.catalog`, `msp_jax.data.registry`):
every command that loads data by name finds the same domains without importing this package.

  register_example_domains()     the shipped example domains (`import tasks` calls it)
  register_persisted_domains()   every domain under $MSP_HOME/domains (`import tasks` calls it)
  persist_domain(name, ...)      copies files into the registry and registers the domain here
  register_domain(name, ...)     registers files for this process only
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Callable

from msp_jax.data import catalog, registry
from msp_jax.data.schema import DomainData, TaskKind
from msp_jax.errors import ConfigError, DataError
from tasks import registration

PathLike = str | os.PathLike


def _memoised(load: Callable[[], DomainData]) -> Callable[[], DomainData]:
  """`load` called once, on first use (a registered domain is read when a dataset is first built)."""
  cache: list[DomainData] = []

  def cached() -> DomainData:
    if not cache:
      cache.append(load())
    return cache[0]
  return cached


def _register_tasks(name: str, load: Callable[[], DomainData], task: TaskKind, splits: tuple[str, ...]
                    ) -> list[str]:
  return registration.register_domain_tasks(name, load, task, splits=splits, overwrite=True)


def register_example_domains() -> list[str]:
  """Registers the example domains shipped with msp-jax (read now: they are small)."""
  names = []
  for name in catalog.EXAMPLE_DOMAINS:
    data = catalog.load_example_domain(name)
    names += _register_tasks(name, lambda data=data: data, data.ontology.task, tuple(data.splits))
  return names


def register_domain(name: str, *, train: PathLike, validation: PathLike | None = None,
                    test: PathLike | None = None, ontology: PathLike | None = None,
                    task: TaskKind | None = None, overwrite: bool = False) -> list[str]:
  """Registers a domain from files for this process (catalog + SeqIO); returns its SeqIO task names.

  The files are read (and so validated) now. `task` is the task kind ('multi_intent', 'ner',
  'semantic_parse'); None lets the reader infer it from the ontology/data. Use `persist_domain` to make
  the domain visible to later processes as well.

  Raises:
    ConfigError: a bad or reserved name, or one the catalog already knows (unless `overwrite`).
    DataError: a missing or malformed file (the message names the file and line).
  """
  catalog.check_domain_name(name)
  if not overwrite and name in catalog.known_tasks():
    raise ConfigError(f"domain {name!r} is already registered; pass overwrite=True to replace it")
  data = registry.read_files(name, train=train, validation=validation, test=test, ontology=ontology, task=task)
  catalog.register_loader(name, lambda: data, overwrite=True)
  return _register_tasks(name, lambda: data, data.ontology.task, tuple(s for s in registry.SPLITS
                                                                       if s in data.splits))


def persist_domain(name: str, *, train: PathLike, validation: PathLike | None = None,
                   test: PathLike | None = None, ontology: PathLike | None = None,
                   task: TaskKind | None = None, overwrite: bool = False,
                   home: PathLike | None = None) -> tuple[pathlib.Path, DomainData, list[str]]:
  """Validates the files, copies them into the registry (`catalog.persist_domain`) and registers the domain's
  SeqIO tasks here; returns (its registry folder, its data, its SeqIO task names).

  Raises:
    ConfigError: a bad or reserved name, or a name already in the registry (unless `overwrite`).
    DataError: a missing or malformed file.
  """
  folder, data = catalog.persist_domain(name, train=train, validation=validation, test=test, ontology=ontology,
                                        task=task, overwrite=overwrite, home=home)
  return folder, data, _register_persisted(registry.read_metadata(folder), home)


def _register_persisted(domain: registry.RegisteredDomain, home: PathLike | None) -> list[str]:
  """SeqIO tasks of a registry folder; its files are read when a dataset is first built."""
  load = _memoised(lambda: registry.read_domain(domain.name, home) or domain.read())
  return _register_tasks(domain.name, load, domain.task, domain.splits)


def register_persisted_domains(home: PathLike | None = None) -> list[str]:
  """Registers every domain under the registry; a broken or reserved entry is skipped with a warning."""
  names = []
  for name in registry.domain_names(home):
    folder = registry.domains_dir(home) / name
    try:
      catalog.check_domain_name(name)
      names += _register_persisted(registry.read_metadata(folder), home)
    except (ConfigError, DataError) as e:
      warnings.warn(f"skipping registered domain {folder}: {e}", stacklevel=2)
  return names
