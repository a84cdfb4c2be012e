"""What each stage of a run records: the `summary` of `<workdir>/stages/<stage>.json` (`msp_jax.run.cache`).

Each summary is a frozen dataclass; `to_json()` is the summary object as it is written (keys in field order)
and `from_json()` reads it back, from this version's records and from earlier ones.

  train       TrainSummary       steps, resumed_from, first/best dev loss, seed_examples
  generate    GenerateSummary    outputs sampled, candidates kept, drop and parse outcome counts, novel counts
  denoise     DenoiseSummary     kept count, the metrics (= metrics.json), the exported files, published names
  downstream  DownstreamSummary  the comparison report (= report.json) and where it is
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class _Summary:
  """to_json / from_json for a flat summary dataclass (subclasses override what is nested or optional)."""

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, raw: Mapping[str, Any]):
    """Raises KeyError naming a missing field, TypeError for a summary that is not an object."""
    return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class TrainSummary(_Summary):
  steps: int                      # the step training ended at
  resumed_from: int | None        # the step training resumed from, None for a fresh start
  first_dev_loss: float | None    # None when not finite (or never measured)
  best_dev_loss: float | None
  seed_examples: int


@dataclasses.dataclass(frozen=True)
class GenerateSummary(_Summary):
  generated: int                  # outputs sampled
  candidates: int                 # outputs that parsed with the requested attributes (candidates.jsonl)
  dropped: dict[str, int]         # reason -> outputs dropped
  outcomes: dict[str, int]        # what the parser made of every output; sums to `generated`
  novel_generated: int            # requests for attribute combinations absent from the seeds
  novel_candidates: int           # candidates among them
  prompt_checkpoint: str          # the step folder of the prompts generation used

  @classmethod
  def from_json(cls, raw: Mapping[str, Any]) -> GenerateSummary:
    return super().from_json({"novel_candidates": 0, **raw})  # Records from before novel candidates were counted.


@dataclasses.dataclass(frozen=True)
class SyntheticFiles:
  """The denoise stage's exports (paths as strings, as recorded)."""

  jsonl: str      # kept records, `msp_jax.synthesis.export` JSONL
  tfrecord: str   # the same records as tf.train.Examples
  seeds: str      # the seed set they were generated from (JSONL of examples)


@dataclasses.dataclass(frozen=True)
class DenoiseSummary(_Summary):
  kept: int
  metrics: dict[str, Any]         # the content of metrics.json (`synthetic_metrics.synthetic_set_metrics` + denoise)
  files: SyntheticFiles
  metrics_file: str
  seqio_tasks: tuple[str, ...]    # names the set was published under (empty when not published)

  @classmethod
  def from_json(cls, raw: Mapping[str, Any]) -> DenoiseSummary:
    return cls(kept=raw["kept"], metrics=raw["metrics"], files=SyntheticFiles(**raw["files"]),
               metrics_file=raw["metrics_file"], seqio_tasks=tuple(raw["seqio_tasks"]))


@dataclasses.dataclass(frozen=True)
class DownstreamSummary(_Summary):
  report: dict[str, Any]          # `compare.compare_training_sets` (= report.json), with its model_kind
  report_file: str
