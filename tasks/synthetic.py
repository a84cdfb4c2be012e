"""SeqIO tasks for synthetic sets written by `msp run` / `msp denoise`, and a mixture of seed + synthetic.

For a synthetic set named NAME (default '<task>_synthetic'), with the usual vocabulary suffixes:
  NAME            split 'train': the kept synthetic examples (`<workdir>/synthetic/synthetic.jsonl`)
  NAME_seeds      split 'train': the exact seed set they were generated from (`seeds.jsonl`)
  NAME_mixture    a `seqio.Mixture` of the two, rates proportional to their sizes (seed + synthetic)
Features are those of every msp-jax task (`tasks/registration.py`): inputs, targets, attributes, uid.

A set is a `msp_jax.data.registry.SyntheticSet`. `persist_synthetic` also records it under
`$MSP_HOME/synthetic/NAME.json` (`registry.persist_synthetic`), where the catalog finds NAME and NAME_seeds by
name and `import tasks` registers them again in later processes (`register_persisted_synthetic`).
"""

from __future__ import annotations

import os
import pathlib
import warnings

import seqio

from msp_jax.data import catalog, registry
from msp_jax.errors import ConfigError, DataError
from tasks import registration
from tasks.custom import _memoised

PathLike = str | os.PathLike
SEEDS_SUFFIX = catalog.SEEDS_SUFFIX
MIXTURE_SUFFIX = "_mixture"


def _count_lines(path: pathlib.Path) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def register_synthetic(synthetic: registry.SyntheticSet) -> list[str]:
  """Registers NAME, NAME_seeds (catalog, this process, and SeqIO) and NAME_mixture for every vocabulary.

  Files are checked to exist now and read when a dataset is first built (`catalog.load_synthetic`).
  """
  catalog.check_synthetic_name(synthetic.name)
  for role, path in (("synthetic records", synthetic.records), ("seed", synthetic.seeds)):
    if not pathlib.Path(path).is_file():
      raise DataError(f"{role} file {str(path)!r} does not exist")
  sizes = {}
  names = []
  for suffix, seeds in (("", False), (SEEDS_SUFFIX, True)):
    load = _memoised(lambda seeds=seeds: catalog.load_synthetic(synthetic, seeds=seeds))
    catalog.register_loader(synthetic.name + suffix, load, overwrite=True)
    sizes[suffix] = _count_lines(pathlib.Path(synthetic.seeds if seeds else synthetic.records))
    names += registration.register_domain_tasks(synthetic.name + suffix, load, synthetic.task_kind,
                                                splits=("train",), overwrite=True)
  for vocabulary_suffix in registration.vocabulary_suffixes():
    mixture = f"{synthetic.name}{MIXTURE_SUFFIX}{vocabulary_suffix}"
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, [
        (f"{synthetic.name}{SEEDS_SUFFIX}{vocabulary_suffix}", max(sizes[SEEDS_SUFFIX], 1)),
        (f"{synthetic.name}{vocabulary_suffix}", max(sizes[""], 1))])
    names.append(mixture)
  return names


def persist_synthetic(synthetic: registry.SyntheticSet, home: PathLike | None = None) -> list[str]:
  """`register_synthetic` now and, through a pointer file under $MSP_HOME/synthetic, in later processes."""
  names = register_synthetic(synthetic)
  registry.persist_synthetic(synthetic, home)
  return names


def register_persisted_synthetic(home: PathLike | None = None) -> list[str]:
  """Registers every persisted synthetic set; a broken or moved one is skipped with a warning naming it."""
  names = []
  for pointer_path in registry.synthetic_pointers(home):
    try:
      names += register_synthetic(registry.read_synthetic(pointer_path))
    except (ConfigError, DataError) as e:
      warnings.warn(f"skipping synthetic set {pointer_path}: {type(e).__name__}: {e}", stacklevel=2)
  return names
