"""The experiment's split of each domain: seeds (what the prompts and every downstream model train on),
validation (model selection, the prompts' dev loss), test (every reported score), and the oracle's training
set (every example outside the test split; `MatrixConfig.max_oracle_examples` of them at most).

  nlupp_hotels    NLU++'s 10-fold few-shot protocol: seeds = folds 0-1 (about 95 utterances), validation =
                  `nlupp_validation_folds` (default fold 19), test = the other folds of 2-19. The catalog's
                  reader follows the authors instead (train = folds 2-19, validation = test = folds 0-1), so
                  the experiment re-splits the domain's examples by their uid prefix `nlupp_<domain>/fold<i>/`.
  crossner_*      seeds = train (100 sentences for music), validation = dev, test = test.
  topv2_*         seeds = the 25-SPIS train file, validation = the 25-SPIS valid file, test = the full test file.
  other domains   seeds = the few-shot sample of train (`data.fewshot`), validation and test as read.

The result is a `DomainData` whose 'train' split is the seed set, so a run with `few_shot=False` trains on it
as is. Deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

from msp_jax.data import catalog, fewshot
from msp_jax.data.schema import DomainData, Example
from msp_jax.errors import ConfigError, DataError
from msp_jax.experiment.config import MatrixConfig

_FOLD = re.compile(r"^nlupp_[a-z]+/fold(\d+)/")


@dataclasses.dataclass(frozen=True)
class ExperimentDomain:
  """A domain as the experiment splits it: `data.splits` = {'train': seeds, 'validation', 'test'}."""

  data: DomainData
  oracle_train: tuple[Example, ...]  # every non-test example (sampled down), the oracle model trains on these
  protocol: str                      # one line: how the splits were made

  @property
  def seeds(self) -> tuple[Example, ...]:
    return self.data.splits["train"]

  def sizes(self) -> dict[str, int]:
    return {"seed": len(self.seeds), "validation": len(self.data.splits["validation"]),
            "test": len(self.data.splits["test"]), "oracle_train": len(self.oracle_train)}


def _unique(*splits: tuple[Example, ...]) -> list[Example]:
  seen: dict[str, Example] = {}
  for split in splits:
    for e in split:
      seen.setdefault(e.uid, e)
  return list(seen.values())


def nlupp_folds(domain: DomainData, seed_folds: tuple[int, ...], validation_folds: tuple[int, ...]
                ) -> tuple[dict[str, tuple[Example, ...]], str]:
  """NLU++'s own protocol (module docstring): splits by fold, from every example the reader returned."""
  by_fold: dict[int, list[Example]] = {}
  for e in _unique(*domain.splits.values()):
    match = _FOLD.match(e.uid)
    if match is None:
      raise DataError(f"{domain.name}: example uid {e.uid!r} does not start with 'nlupp_<domain>/fold<i>/'")
    by_fold.setdefault(int(match.group(1)), []).append(e)
  for fold in (*seed_folds, *validation_folds):
    if fold not in by_fold:
      raise ConfigError(f"experiment_matrix: NLU++ fold {fold} of {domain.name} has no examples (folds "
                        f"{min(by_fold)}-{max(by_fold)})")
  pick = lambda folds: tuple(e for f in sorted(by_fold) if f in folds for e in by_fold[f])  # noqa: E731
  test_folds = tuple(f for f in sorted(by_fold) if f not in seed_folds and f not in validation_folds)
  splits = {"train": pick(seed_folds), "validation": pick(validation_folds), "test": pick(test_folds)}
  protocol = (f"NLU++ 10-fold protocol: seeds = folds {_folds(seed_folds)}, validation = folds "
              f"{_folds(validation_folds)}, test = folds {_folds(test_folds)}")
  return splits, protocol


def _folds(folds: tuple[int, ...]) -> str:
  return ",".join(map(str, sorted(folds))) or "none"


def experiment_domain(name: str, matrix: MatrixConfig, data_dir: str | None = None) -> ExperimentDomain:
  """The domain `name` split as the module docstring says; ConfigError for an unknown domain or a split it lacks."""
  try:
    domain = catalog.load_task_data(name, data_dir)
  except ConfigError as error:
    raise ConfigError(f"experiment_matrix.domains: {error}") from None
  splits = domain.splits
  if name.startswith("nlupp_"):
    chosen, protocol = nlupp_folds(domain, matrix.nlupp_seed_folds, matrix.nlupp_validation_folds)
  elif name.startswith("topv2_"):
    for split in ("fewshot_train", "fewshot_validation", "test"):
      if split not in splits:
        raise ConfigError(f"experiment_matrix.domains: {name} has no {split!r} split (the 25-SPIS files exist "
                          "for topv2_reminder and topv2_weather only)")
    chosen = {"train": splits["fewshot_train"], "validation": splits["fewshot_validation"], "test": splits["test"]}
    protocol = "TOPv2 25-SPIS: seeds = the 25-SPIS train file, validation = its valid file, test = the full test file"
  elif name.startswith("crossner_"):
    chosen = {"train": splits["train"], "validation": splits["validation"], "test": splits["test"]}
    protocol = "CrossNER: seeds = train, validation = dev, test = test"
  else:
    chosen = {"train": fewshot.few_shot(domain, seed=0), "validation": splits.get("validation", ()),
              "test": splits.get("test", ())}
    protocol = f"seeds = the few-shot sample of train ({fewshot.rule(domain)}), validation and test as read"
  if not chosen["test"]:
    raise ConfigError(f"experiment_matrix.domains: {name} has no test examples to score on")
  if matrix.max_seed_examples is not None:
    chosen["train"] = chosen["train"][:matrix.max_seed_examples]
    protocol += f"; seeds capped at {matrix.max_seed_examples}"
  if matrix.max_validation_examples is not None:
    chosen["validation"] = chosen["validation"][:matrix.max_validation_examples]
    protocol += f"; validation capped at {matrix.max_validation_examples}"
  test_uids = {e.uid for e in chosen["test"]}
  test_texts = {e.text for e in chosen["test"]}
  pool = [e for e in _unique(*splits.values()) if e.uid not in test_uids and e.text not in test_texts]
  if len(pool) > matrix.max_oracle_examples:
    keep = np.sort(np.random.default_rng(0).choice(len(pool), matrix.max_oracle_examples, replace=False))
    pool = [pool[i] for i in keep]
  data = DomainData(name=domain.name, ontology=domain.ontology, splits={k: tuple(v) for k, v in chosen.items()})
  return ExperimentDomain(data, tuple(pool), protocol)


def split_fingerprint(domain: ExperimentDomain) -> dict:
  """What the cells' stage fingerprints must change with: the uids of each split."""
  splits = {**domain.data.splits, "oracle": domain.oracle_train}
  return {name: hashlib.sha256("\n".join(e.uid for e in examples).encode()).hexdigest()[:16]
          for name, examples in splits.items()}
