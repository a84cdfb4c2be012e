"""The training sets a downstream comparison puts side by side (DESIGN "baselines"):

  seed only    the few-shot seed set, no augmentation;
  seed + EDA   the seeds plus as many Easy Data Augmentation copies as there are synthetic examples (Wei and
               Zou 2019): each copy applies one of random swap, random deletion and random insertion to a seed
               utterance's words and keeps its intents. EDA's fourth operation, synonym replacement, needs a
               thesaurus (WordNet), which is not available offline here: random insertion re-inserts a word of
               the same utterance instead of a synonym. Spans are dropped (word positions move); the intent
               classifier does not read them;
  seed + MSP   the seeds plus the kept synthetic examples of a run.

Deterministic given `seed`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from msp_jax.data.schema import Example

SEED_ONLY, SEED_EDA, SEED_MSP = "seed only", "seed + EDA", "seed + MSP"
EDA_OPERATIONS = ("swap", "delete", "insert")


def eda_copy(example: Example, rng: np.random.Generator, alpha: float = 0.1, uid: str | None = None) -> Example:
  """One EDA copy of `example`: a random operation on max(1, alpha * words) words; intents kept, spans dropped.

  A one-word utterance is only ever duplicated by insertion (deleting or swapping its only word would leave
  nothing, or the same text).
  """
  words = example.text.split()
  changes = max(1, int(round(alpha * len(words))))
  operation = EDA_OPERATIONS[2] if len(words) < 2 else EDA_OPERATIONS[int(rng.integers(len(EDA_OPERATIONS)))]
  words = list(words)
  for _ in range(changes):
    if not words:
      break
    if operation == "swap" and len(words) >= 2:
      i, j = rng.choice(len(words), size=2, replace=False)
      words[i], words[j] = words[j], words[i]
    elif operation == "delete" and len(words) >= 2:
      del words[int(rng.integers(len(words)))]
    else:  # insert: a word of the utterance at a random place
      words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
  return dataclasses.replace(example, uid=uid or f"{example.uid}/eda", text=" ".join(words), spans=(),
                             parse=None)


def eda_examples(seeds: Sequence[Example], count: int, seed: int = 0) -> list[Example]:
  """`count` EDA copies, cycling through the seeds in order (each seed augmented about equally often)."""
  if count and not seeds:
    raise ValueError("eda_examples: no seed examples to augment")
  rng = np.random.default_rng(seed)
  return [eda_copy(seeds[i % len(seeds)], rng, uid=f"{seeds[i % len(seeds)].uid}/eda{i // len(seeds)}")
          for i in range(count)]


def training_sets(seeds: Sequence[Example], synthetic: Sequence[Example], seed: int = 0
                  ) -> dict[str, list[Example]]:
  """The three training sets, by name: seed only, seed + EDA (as many copies as synthetic examples), seed + MSP."""
  seeds, synthetic = list(seeds), list(synthetic)
  return {SEED_ONLY: seeds, SEED_EDA: seeds + eda_examples(seeds, len(synthetic), seed), SEED_MSP: seeds + synthetic}
