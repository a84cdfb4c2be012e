"""`results.json`: every figure of the experiment, every predictions file, every setting, and the wall time of
each stage, computed from the cells' files.

  {"command", "settings": {"matrix", "run"}, "cells": [{"domain", "method", "generation_seed", "dir", "seconds":
   {stage: s}}], "missing": [cell dirs not finished],
   "domains": {name: {"task", "protocol", "sizes", "main_score", "score_names", "msp_row",
     "rows": {row: {"method", "mixer", "title", "runs": [{"generation_seed", "seed", "predictions", "scores"}],
                    "scores": {score: {"mean", "std", "n"}}, "generated": {...} (generated rows),
                    "prompt_training": {"steps", "first_dev_loss", "best_dev_loss"} (rows that train prompts)}},
     "comparisons": [{"method", "baseline", "score", "difference", "low", "high", "includes_zero", ...}]}},
   "ablation": {"domain", "rows": [row names]} | null}

Every score is recomputed here from the predictions files (`predictions.score_rows`), so `recompute` on the
same folder reproduces every figure; predictions paths are relative to the experiment folder.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from msp_jax import files
from msp_jax.errors import DataError
from msp_jax.evaluation import predictions
from msp_jax.experiment import cells, label_checks, statistics
from msp_jax.experiment import config as cfg
from msp_jax.run import cache
from msp_jax.synthesis import export, label_noise

RESULTS_FILE = "results.json"
BASELINES = (cfg.SEED_ONLY, cfg.EDA, cfg.IN_CONTEXT, cfg.PROMPT_TUNING)


def _mean(values: list[float]) -> float | None:
  return float(np.mean(values)) if values else None


def generated_summary(metrics: list[dict], correctness: list[dict], noise: list[dict]) -> dict[str, Any]:
  """A generated row's data metrics: means over its generation seeds; funnel counts summed over them."""
  distinct = {f"distinct_{k}": _mean([m["distinct_equal_size"]["synthetic"][f"distinct_{k}"] for m in metrics])
              for k in (1, 2, 3)}
  seed_distinct = {f"distinct_{k}": _mean([m["distinct_equal_size"]["seed"][f"distinct_{k}"] for m in metrics])
                   for k in (1, 2, 3)}
  generated = sum(m["generated"]["outputs"] for m in metrics)
  parsed = sum(round(m["generated"]["parse_rate"] * m["generated"]["outputs"]) for m in metrics)
  drops: dict[str, int] = {}
  for m in metrics:
    for reason, count in {**m.get("generation_dropped", {}), **m.get("denoise", {}).get("dropped", {})}.items():
      drops[reason] = drops.get(reason, 0) + int(count)
    for key, reasons in (("consistency", ("contradicted_in_kept_set", "contradicted_in_fill")),
                         ("label_noise_filter", ("noisy_in_kept_set", "noisy_in_fill"))):
      for reason in reasons:
        if reason in m.get(key, {}):
          drops[reason] = drops.get(reason, 0) + int(m[key][reason])
  return {
      "distinct": distinct, "seed_distinct": seed_distinct,
      "sample_size": _mean([m["distinct_equal_size"]["sample_size"] for m in metrics]),
      "perplexity": _mean([m["kept"]["perplexity"] for m in metrics if "perplexity" in m["kept"]]),
      "seed_perplexity": _mean([m["seed_perplexity"]["perplexity"] for m in metrics
                                if "perplexity" in m.get("seed_perplexity", {})]),
      "correctness": _mean([c["correctness"] for c in correctness if c["correctness"] is not None]),
      "funnel": {"generated": generated, "parsed": parsed,
                 "candidates": sum(int(m["denoise"]["candidates"]) for m in metrics),
                 "kept": sum(int(m["kept"]["count"]) for m in metrics)},
      "dropped": drops,
      "label_noise": {key: _mean([n[key] for n in noise if n[key] is not None])
                      for key in ("template_leak", "degenerate_span", "unlabelled_capitalised")},
  }


def _rows_of(root: pathlib.Path, row: dict, task: str) -> list[list[dict]]:
  return [predictions.read(root / run["predictions"]) for run in row["runs"]]


def validation_summary(runs: list[dict]) -> dict | None:
  """Mean ± std of the runs' selection scores on validation (what settings are chosen on, never test); None
  when a run lacks it (task models trained before it was recorded)."""
  values = [run.get("validation") for run in runs]
  if not values or any(v is None for v in values):
    return None
  return statistics.mean_std(values)


def score_row(root: pathlib.Path, row: dict, task: str) -> dict[str, dict[str, float]]:
  """Each run's scores from its predictions file (written into `row['runs']`) and their mean ± std."""
  for run, rows in zip(row["runs"], _rows_of(root, row, task)):
    run["scores"] = predictions.score_rows(rows, task)
  if not row["runs"]:
    return {}
  return {name: statistics.mean_std([run["scores"][name] for run in row["runs"]])
          for name in row["runs"][0]["scores"]}


def compare_rows(root: pathlib.Path, rows: dict, task: str, msp_row: str, matrix: cfg.MatrixConfig) -> list[dict]:
  """Paired bootstrap of the main score: (MSP - each baseline), (each MSP variant - each baseline and MSP), and
  (MSP with each other mixer of the ablation - MSP with the experiment's mixer)."""
  score = predictions.MAIN_SCORE[task]
  counts: dict[str, list[np.ndarray]] = {}
  uids: dict[str, list[str]] = {}

  def counts_of(name: str) -> list[np.ndarray]:
    if name not in counts:
      runs = _rows_of(root, rows[name], task)
      for rows_of_run in runs:
        order = [r["uid"] for r in rows_of_run]
        if uids.setdefault("test", order) != order:
          raise DataError(f"{root}: predictions of {name!r} are not on the same test examples as the others")
      counts[name] = [statistics.example_counts(r, score) for r in runs]
    return counts[name]

  variant_rows = [msp_row.replace(cfg.MSP, method, 1) for method in cfg.MSP_VARIANTS]
  mixer_rows = [name for name, row in rows.items() if row["method"] == cfg.MSP and name != msp_row]
  out = []
  for target, others in ((msp_row, BASELINES), *((row, (*BASELINES, msp_row)) for row in variant_rows),
                         *((row, (msp_row,)) for row in mixer_rows)):
    if target not in rows or not rows[target]["runs"]:
      continue
    for baseline in others:
      if baseline in rows and rows[baseline]["runs"]:
        result = statistics.paired_bootstrap(counts_of(target), counts_of(baseline),
                                             samples=matrix.bootstrap_samples, seed=matrix.bootstrap_seed)
        out.append({"method": target, "baseline": baseline, "score": score, **result})
  return out


def collect(runner, command: str = "") -> dict:
  """results.json's content from the runner's cells (finished ones; the others are listed as missing)."""
  matrix, root = runner.matrix, runner.root
  msp_row = cfg.Cell("", cfg.MSP, runner.base.mixture.mixer).name
  results: dict[str, Any] = {
      "command": command,
      "settings": {"matrix": dataclasses.asdict(matrix), "run": json.loads(json.dumps(
          dataclasses.asdict(runner.base), default=str))},
      "cells": [], "missing": [], "domains": {},
      "ablation": None if matrix.ablation_domain is None else {
          "domain": matrix.ablation_domain,
          "rows": [cfg.Cell("", cfg.MSP, m).name for m in matrix.ablation_mixers]}}
  for name in matrix.domains:
    domain = runner.domain(name)
    task = domain.data.ontology.task
    entry = {"task": task, "protocol": domain.protocol, "sizes": domain.sizes(),
             "synthetic_target": cells.target_count(matrix, domain), "main_score": predictions.MAIN_SCORE[task],
             "score_names": list(predictions.SCORE_NAMES[task]), "msp_row": msp_row, "rows": {},
             "seed_label_noise": label_noise.noise_summary(domain.seeds, domain.data.ontology.names)}
    for cell in (c for c in runner.cells if c.domain == name):
      row = entry["rows"].setdefault(cell.name, {"method": cell.method, "mixer": cell.mixer,
                                                 "title": cfg.TITLES[cell.method] + (f" ({cell.mixer})" if
                                                                                    cell.mixer else ""),
                                                 "runs": [], "_metrics": [], "_correctness": [], "_noise": []})
      cell_dir = runner.cell_dir(cell)
      results["cells"].append({"domain": name, "method": cell.name, "generation_seed": cell.generation_seed,
                               "dir": cell.relative_dir, "seconds": cells.stage_seconds(cell_dir)})
      trained = cache.read_record(cell_dir, "train")
      if trained is not None and runner.is_done(cell, "train"):
        row["prompt_training"] = {k: trained.summary.get(k) for k in ("steps", "first_dev_loss", "best_dev_loss")}
      record = cache.read_record(cell_dir, cells.TASK_MODELS)
      if record is None or not runner.is_done(cell, cells.TASK_MODELS):
        results["missing"].append(cell.relative_dir)
        continue
      for run in record.summary["report"]["sets"][cell.name]["runs"]:
        path = (cell_dir / "downstream" / run["predictions"]).relative_to(root)
        row["runs"].append({"generation_seed": cell.generation_seed, "seed": run["seed"],
                            "predictions": path.as_posix(), "best_epoch": run["best_epoch"],
                            "validation": run.get("validation")})
      if cell.generated:
        row["_metrics"].append(json.loads(runner.metrics_file(cell).read_text(encoding="utf-8")))
        correctness = cache.read_record(cell_dir, cells.CORRECTNESS)
        if correctness is not None:
          row["_correctness"].append(correctness.summary)
        kept = [r.example for r in export.read_jsonl(runner.synthetic_file(cell))]
        row["_noise"].append(label_noise.noise_summary(kept, domain.data.ontology.names))
    for row in entry["rows"].values():
      metrics, correctness, noise = row.pop("_metrics"), row.pop("_correctness"), row.pop("_noise")
      row["scores"] = score_row(root, row, task)
      row["validation"] = validation_summary(row["runs"])
      if metrics:
        row["generated"] = generated_summary(metrics, correctness, noise)
    entry["comparisons"] = compare_rows(root, entry["rows"], task, msp_row, matrix)
    entry["oracle"] = oracle_reference(runner, name)
    results["domains"][name] = entry
  return results


def oracle_reference(runner, domain: str) -> dict | None:
  """The domain's oracle reference (`cells.ORACLE`), its figures recomputed from its predictions file; None
  until that stage has run."""
  cell = cells.oracle_cell(domain)
  cell_dir = runner.cell_dir(cell)
  record = cache.read_record(cell_dir, cells.ORACLE)
  if record is None or not runner.is_done(cell, cells.ORACLE):
    return None
  path = (cell_dir / record.summary["predictions"]).relative_to(runner.root).as_posix()
  return {"predictions": path, "train_examples": record.summary["oracle_train_examples"],
          "seconds": record.seconds, **_oracle_figures(runner.root, path, runner.domain(domain).data.ontology.task)}


def _oracle_figures(root: pathlib.Path, path: str, task: str) -> dict:
  """{'scores', 'test_reproduced' (percent of test examples whose labels the oracle reproduces)} from the
  oracle's predictions file."""
  rows = predictions.read(root / path)
  reproduced = [label_checks.labels_reproduced(r["gold"], r["predicted"], task) for r in rows]
  return {"scores": predictions.score_rows(rows, task),
          "test_reproduced": 100.0 * sum(reproduced) / len(rows) if rows else None}


def write(root: pathlib.Path, results: dict) -> pathlib.Path:
  path = pathlib.Path(root) / RESULTS_FILE
  files.atomic_write_text(path, json.dumps(results, indent=2) + "\n")
  return path


def read(root: pathlib.Path) -> dict:
  path = pathlib.Path(root) / RESULTS_FILE
  if not path.is_file():
    raise DataError(f"{path}: no results; run `msp experiment` on this folder first")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None


def recompute(root: pathlib.Path, results: dict) -> list[str]:
  """Re-scores every run and comparison of `results` from the predictions files under `root`; returns what
  differs (empty: every figure recomputes)."""
  problems = []
  matrix_fields = {f.name for f in dataclasses.fields(cfg.MatrixConfig)}
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in results["settings"]["matrix"].items()
              if k in matrix_fields}
  matrix = cfg.MatrixConfig(**settings)
  for name, entry in results["domains"].items():
    rows = json.loads(json.dumps(entry["rows"]))
    for row_name, row in rows.items():
      scores = score_row(root, row, entry["task"])
      for score, stats in scores.items():
        for key in ("mean", "std"):
          if not np.isclose(stats[key], entry["rows"][row_name]["scores"][score][key], atol=1e-9):
            problems.append(f"{name}/{row_name}: {score} {key} {stats[key]} != {entry['rows'][row_name]['scores'][score][key]}")
    oracle = entry.get("oracle")
    if oracle:
      figures = _oracle_figures(root, oracle["predictions"], entry["task"])
      for score, value in [*figures["scores"].items(), ("test_reproduced", figures["test_reproduced"])]:
        recorded = oracle["scores"][score] if score in oracle["scores"] else oracle[score]
        if not np.isclose(value, recorded, atol=1e-9):
          problems.append(f"{name}/oracle: {score} {value} != {recorded}")
    for new, old in zip(compare_rows(root, rows, entry["task"], entry["msp_row"], matrix), entry["comparisons"]):
      for key in ("difference", "low", "high"):
        if not np.isclose(new[key], old[key], atol=1e-9):
          problems.append(f"{name}/{old['method']} vs {old['baseline']}: {key} {new[key]} != {old[key]}")
  return problems
