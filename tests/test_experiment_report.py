"""The experiment report's mixer ablation and wall-time tables, and the mixer comparisons of `results.compare_rows`,
on hand-made prediction files and results (no model runs)."""

from __future__ import annotations

import numpy as np
import pytest

from msp_jax.evaluation import predictions
from msp_jax.experiment import config as cfg, report, results


def _write_run(root, name: str, gold: list[list[str]], predicted: list[list[str]]) -> dict:
  path = root / f"{name}.jsonl.gz"
  predictions.write(path, [{"uid": f"u{k}", "text": f"text {k}",
                            "gold": {"intents": g, "spans": [], "parse": None},
                            "predicted": {"intents": p, "spans": [], "parse": None}}
                           for k, (g, p) in enumerate(zip(gold, predicted))])
  return {"predictions": path.name, "generation_seed": 0, "seed": 0}


def _micro_f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
  """float64 reference: micro-F1 over (example, intent) pairs, percent."""
  tp = sum(len(set(g) & set(p)) for g, p in zip(gold, predicted))
  fp = sum(len(set(p) - set(g)) for g, p in zip(gold, predicted))
  fn = sum(len(set(g) - set(p)) for g, p in zip(gold, predicted))
  return 200.0 * tp / (2 * tp + fp + fn)


def test_each_ablation_mixer_is_compared_with_the_experiment_s_mixer_only(tmp_path):
  rng = np.random.default_rng()
  labels = ["a", "b", "c", "d"]
  n = 60
  gold = [sorted(set(rng.choice(labels, size=rng.integers(1, 3)))) for _ in range(n)]
  noisy = lambda keep: [g if rng.random() < keep else [str(rng.choice(labels))] for g in gold]  # noqa: E731
  outputs = {"seed_only": [noisy(0.5)], "msp-attention": [noisy(0.7), noisy(0.7)], "msp-cnn": [noisy(0.9)]}
  rows = {}
  for name, runs in outputs.items():
    method, _, mixer = name.partition("-")
    rows[name] = {"method": method, "mixer": mixer or None,
                  "runs": [_write_run(tmp_path, f"{name}{k}", gold, p) for k, p in enumerate(runs)]}
  matrix = cfg.MatrixConfig(domains=("a",), bootstrap_samples=200)
  compared = results.compare_rows(tmp_path, rows, "multi_intent", "msp-attention", matrix)
  pairs = [(c["method"], c["baseline"]) for c in compared]
  assert pairs == [("msp-attention", "seed_only"), ("msp-cnn", "msp-attention")]
  expected = (_micro_f1(gold, outputs["msp-cnn"][0])
              - np.mean([_micro_f1(gold, p) for p in outputs["msp-attention"]]))
  assert compared[1]["difference"] == pytest.approx(expected, abs=1e-9)
  assert compared[1]["low"] <= compared[1]["difference"] <= compared[1]["high"]


def _entry(comparisons: list[dict]) -> dict:
  stats = lambda mean: {"mean": mean, "std": 1.0, "n": 6}  # noqa: E731
  row = lambda mixer, mean, loss: {  # noqa: E731
      "method": cfg.MSP, "mixer": mixer, "title": f"seed + MSP ({mixer})", "runs": [{}] * 6,
      "scores": {"intent_f1": stats(mean), "slot_f1": stats(30.0)}, "validation": stats(mean - 10),
      "generated": {"correctness": 40.0, "distinct": {"distinct_2": 0.8}},
      **({"prompt_training": {"steps": 60, "first_dev_loss": loss, "best_dev_loss": loss - 1}} if loss else {})}
  return {"score_names": ["intent_f1", "slot_f1"], "main_score": "intent_f1", "msp_row": "msp-attention",
          "rows": {"msp-attention": row("attention", 61.0, 3.25), "msp-cnn": row("cnn", 59.0, None)},
          "comparisons": comparisons, "oracle": {"seconds": 30.0}}


def test_ablation_table_shows_validation_loss_and_the_paired_difference():
  comparison = {"method": "msp-cnn", "baseline": "msp-attention", "difference": -2.0, "low": -3.5, "high": -0.25}
  title, header, rows, _ = report._ablation_table(
      {"domain": "d", "rows": ["msp-concat", "msp-attention", "msp-cnn"]}, _entry([comparison]))
  assert title == "mixer ablation (d)" and header[-1] == "intent F1 vs attention (95% interval)"
  assert [r[0] for r in rows] == ["attention", "cnn"]  # a mixer without a row is left out
  attention, cnn = rows
  assert attention[4] == "51.0 ± 1.0" and attention[5] == "3.25 → 2.25" and attention[-1] == "(reference)"
  assert cnn[2] == "59.0 ± 1.0" and cnn[5] == "–" and cnn[-1] == "-2.00 [-3.50, -0.25]"


def test_wall_time_table_sums_each_stage_over_cells_and_domains():
  cells = [{"domain": "a", "seconds": {"train": 3600.0, "task_models": 1800.0}},
           {"domain": "a", "seconds": {"task_models": 1800.0, "generate": None}},
           {"domain": "b", "seconds": {"task_models": 720.0}}]
  domains = {"a": _entry([]), "b": {"oracle": None}}
  _, header, rows, _ = report._wall_time_table({"cells": cells, "domains": domains})
  assert header == ["stage", "a", "b", "total"]
  table = {r[0]: r[1:] for r in rows}
  assert table["train"] == ["1.00", "0.00", "1.00"]
  assert table["task_models"] == ["1.00", "0.20", "1.20"]
  assert table["oracle"] == ["0.01", "0.00", "0.01"]
  assert table["all stages"] == [f"{(3600 + 3600 + 30) / 3600:.2f}", "0.20", f"{(7200 + 30 + 720) / 3600:.2f}"]
