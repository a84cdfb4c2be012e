"""The training sets a downstream comparison puts side by side:

  seed only    the few-shot seed set, no augmentation;
  seed + EDA   the seeds plus as many Easy Data Augmentation copies as there are synthetic examples
               (`eda`: span-preserving swap, deletion, insertion and mention replacement; labels kept);
  seed + MSP   the seeds plus the kept synthetic examples of a run.

Deterministic given `seed`.
"""

from __future__ import annotations

from typing import Sequence

from msp_jax.data.schema import Example
from msp_jax.evaluation.eda import eda_examples

SEED_ONLY, SEED_EDA, SEED_MSP = "seed only", "seed + EDA", "seed + MSP"


def training_sets(seeds: Sequence[Example], synthetic: Sequence[Example], seed: int = 0
                  ) -> dict[str, list[Example]]:
  """The three training sets, by name: seed only, seed + EDA (as many copies as synthetic examples), seed + MSP."""
  seeds, synthetic = list(seeds), list(synthetic)
  return {SEED_ONLY: seeds, SEED_EDA: seeds + eda_examples(seeds, len(synthetic), seed), SEED_MSP: seeds + synthetic}
