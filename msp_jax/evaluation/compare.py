"""Does the synthetic data help: the fine-tuned task model trained on each training set (seed only, seed + EDA,
seed + MSP), `repeats` seeds each, scored on the test split with the task's standard metrics.

  report = compare_training_sets(baselines.training_sets(seeds, synthetic), validation, test, ontology,
                                 TaskModelConfig(), repeats=3, out_dir=workdir / "downstream")
  print(format_report(report))

Every trained model writes `<out_dir>/<training set>/seed<k>/predictions.jsonl` (`predictions`); the report
(which the caller writes as `<out_dir>/report.json`) holds, per model, the file's path relative to `out_dir`
beside the scores computed from it, so every figure can be recomputed from the files:

  {"task", "domain", "test_examples", "repeats", "model": {settings}, "ceiling": {...} (TOPv2 only),
   "sets": {name: {"examples", "mean": {score: value}, "std": {...},
                   "runs": [{"seed", "predictions", "scores", "best_epoch", "epochs", "seconds",
                             "validation", "validation_scores" (with a validation set)}]}}}
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Sequence

import numpy as np

from msp_jax import files
from msp_jax.data.schema import Example, Ontology
from msp_jax.errors import ConfigError
from msp_jax.evaluation import predictions, topv2_parse
from msp_jax.evaluation.heads import LabelSpace
from msp_jax.evaluation.task_models import (PretrainedEncoder, TaskModelConfig, bucket_lengths, encode,
                                           load_encoder)
from msp_jax.evaluation.task_models import predict, train

REPORT_FILE = "report.json"
SCORE_TITLES = {"intent_f1": "intent F1", "slot_f1": "slot F1", "entity_f1": "entity F1",
                "exact_match": "exact match", "intent_accuracy": "intent acc."}


def _folder_name(name: str) -> str:
  """'seed + MSP' -> 'seed_msp': a training set's name as a folder."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "set"


def compare_training_sets(training_sets: dict[str, Sequence[Example]], validation: Sequence[Example],
                          test: Sequence[Example], ontology: Ontology,
                          config: TaskModelConfig = TaskModelConfig(), repeats: int = 3,
                          out_dir: str | os.PathLike = "downstream", encoder: PretrainedEncoder | None = None,
                          predictions_name: str = "predictions.jsonl") -> dict:
  """Trains a task model per training set and seed (config.seed, config.seed + 1, ...), selected on
  `validation` (may be empty: last epoch), predicts `test` and writes the predictions (module docstring) to
  `predictions_name` in each run's folder ('predictions.jsonl.gz': gzipped).

  Raises ConfigError for an empty test or training set, repeats < 1; DataError for a label absent from the
  ontology or a span outside its text (naming the split and the example).
  """
  if repeats < 1:
    raise ConfigError(f"downstream: repeats={repeats}, expected >= 1")
  space = LabelSpace.of(ontology)
  space.check(test, "test")
  if validation:
    space.check(validation, "validation")
  for name, examples in training_sets.items():
    space.check(examples, f"{name!r} training")
  encoder = encoder or load_encoder(config.encoder)
  buckets = shared_buckets(training_sets, validation, test, space, encoder, config.max_buckets)
  out_dir = pathlib.Path(out_dir)
  report: dict = {"task": ontology.task, "domain": ontology.domain, "test_examples": len(test),
                  "validation_examples": len(validation), "repeats": repeats, "model": dataclasses.asdict(config),
                  "sets": {}}
  if ontology.task == "semantic_parse":
    report["ceiling"] = topv2_parse.flat_ceiling(test)
  for name, examples in training_sets.items():
    runs = []
    for offset in range(repeats):
      run_config = dataclasses.replace(config, seed=config.seed + offset)
      model = train(examples, space, run_config, encoder, validation, buckets)
      rows = [predictions.row(e, p) for e, p in zip(test, predict(model, test, encoder))]
      relative = pathlib.Path(_folder_name(name)) / f"seed{run_config.seed}" / predictions_name
      predictions.write(out_dir / relative, rows)
      runs.append({"seed": run_config.seed, "predictions": relative.as_posix(),
                   "scores": predictions.score_rows(rows, ontology.task), "best_epoch": model.best_epoch,
                   "epochs": len(model.history), "seconds": round(model.seconds, 1),
                   **selected_validation(model)})
    keys = list(runs[0]["scores"])
    report["sets"][name] = {
        "examples": len(examples),
        "mean": {k: float(np.mean([r["scores"][k] for r in runs])) for k in keys},
        "std": {k: float(np.std([r["scores"][k] for r in runs])) for k in keys},
        "runs": runs}
  return report


def selected_validation(model) -> dict:
  """{'validation' (the selection score of the epoch kept), 'validation_scores' (the task's scores on
  validation then)}, or {} for a model trained without a validation set: what settings are chosen on."""
  best = model.history[model.best_epoch - 1]
  if "validation" not in best:
    return {}
  return {"validation": float(best["validation"]), "validation_scores": best["validation_scores"]}


def shared_buckets(training_sets: dict[str, Sequence[Example]], validation: Sequence[Example],
                   test: Sequence[Example], space: LabelSpace, encoder: PretrainedEncoder,
                   max_buckets: int) -> tuple[int, ...]:
  """One set of padded lengths for every model, so they all share the same compiled steps: the best
  `max_buckets` for the examples every training set holds (the seeds) with validation and test, plus one
  longer bucket (a multiple of 8) when another set's examples outgrow them.

  A seed-only model then pads, batches and draws its dropout masks the same way whatever the synthetic sets
  hold, so its scores do not move with them (the comparison stays paired).
  """
  sets = list(training_sets.values())
  unique = {(e.uid, e.text): e for examples in (*sets, validation, test) for e in examples}  # each encoded once
  length = dict(zip(unique, encode(list(unique.values()), space, encoder.tokenizer).lengths))
  common = set.intersection(*({e.uid for e in examples} for examples in sets)) if sets else set()
  shared = [e for e in sets[0] if e.uid in common] if sets else []
  base_examples = shared + list(validation) + list(test)
  base = bucket_lengths([length[e.uid, e.text] for e in base_examples], max_buckets) if base_examples else ()
  longest = max((int(length[e.uid, e.text]) for examples in sets for e in examples), default=0)
  if not base or longest > base[-1]:
    return base + (-(-longest // 8) * 8,)
  return base


def write_report(out_dir: str | os.PathLike, report: dict) -> pathlib.Path:
  """`<out_dir>/report.json` (the predictions paths in it are relative to that folder)."""
  path = pathlib.Path(out_dir) / REPORT_FILE
  files.atomic_write_text(path, json.dumps(report, indent=2) + "\n")
  return path


def format_report(report: dict) -> str:
  """One table: a line per training set with the task's scores (mean ± std over seeds, percent)."""
  names = predictions.SCORE_NAMES[report["task"]]
  header = f"downstream task model (fine-tuned MiniLM), {report['domain']}, {report['test_examples']} test " \
           f"examples, mean ± std of {report['repeats']} seed{'s' if report['repeats'] > 1 else ''}:"
  lines = [header, f"  {'training set':<14} {'examples':>8} " + " ".join(f"{SCORE_TITLES[n]:>13}" for n in names)]
  for name, row in report["sets"].items():
    cells = " ".join(f"{row['mean'][n]:>7.1f} ± {row['std'][n]:>3.1f}" for n in names)
    lines.append(f"  {name:<14} {row['examples']:>8} {cells}")
  if "ceiling" in report:
    c = report["ceiling"]
    lines.append(f"  exact-match ceiling of a flat parse model: {c['ceiling']:.2f}% ({int(c['nested'])} of "
                 f"{int(c['parses'])} test parses are nested)")
  return "\n".join(lines)
