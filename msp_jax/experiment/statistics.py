"""The experiment's statistics: mean ± std over repeats, and the paired bootstrap 95% interval of the difference
of a main score between two methods over test examples.

Every main score is a ratio of per-example sums, so a bootstrap resample needs only per-example counts:

  micro-F1 (intent_f1, entity_f1)   counts [n, 3] = (tp, fp, fn) per example; F1 = 200 tp / (2 tp + fp + fn)
  exact_match, intent_accuracy      counts [n, 1] = 100 if right else 0; the score is their mean

`example_counts` derives them from prediction rows (`evaluation.predictions`) through the same metric
functions `predictions.score_rows` uses, so the counts of a whole file sum to its reported score.

The paired bootstrap draws B resamples of the n test examples (with replacement, `numpy.random.default_rng(seed)
.integers(0, n, size=(B, n))`), scores every run of both methods on each resample, averages each method's runs
(generation seeds x downstream repeats) and takes the difference. The interval is the 2.5th and 97.5th
percentiles of the B differences (numpy's default linear interpolation). Deterministic given `seed`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from msp_jax.data.schema import Span
from msp_jax.evaluation import metrics

MICRO_F1 = ("intent_f1", "slot_f1", "entity_f1")
MEAN_OF_EXAMPLES = ("exact_match", "intent_accuracy")


def mean_std(values: Sequence[float]) -> dict[str, float]:
  """{'mean', 'std', 'n'}: population std (ddof 0), as `evaluation.compare` reports it."""
  array = np.asarray(values, np.float64)
  return {"mean": float(array.mean()), "std": float(array.std()), "n": int(array.size)}


def _micro_counts(gold, predicted, fn) -> list[float]:
  scores = fn([gold], [predicted])
  return [scores["tp"], scores["fp"], scores["fn"]]


def example_counts(rows: Sequence[dict], score: str) -> np.ndarray:
  """[n, 3] (tp, fp, fn) for a micro-F1 score, [n, 1] (100 or 0) for a per-example score (module docstring)."""
  if score in ("intent_f1",):
    return np.array([_micro_counts(r["gold"]["intents"], r["predicted"]["intents"], metrics.intent_micro_f1)
                     for r in rows], np.float64).reshape(-1, 3)
  if score in ("slot_f1", "entity_f1"):
    spans = lambda r, side: [Span(int(s), int(e), str(label), r["text"][int(s):int(e)])  # noqa: E731
                             for s, e, label in r[side]["spans"]]
    return np.array([_micro_counts(spans(r, "gold"), spans(r, "predicted"), metrics.char_span_micro_f1)
                     for r in rows], np.float64).reshape(-1, 3)
  if score == "exact_match":
    return np.array([[metrics.exact_match([r["gold"]["parse"] or ""], [r["predicted"]["parse"] or ""])
                      ["exact_match"]] for r in rows], np.float64).reshape(-1, 1)
  if score == "intent_accuracy":
    root = lambda intents: intents[0] if intents else None  # noqa: E731
    return np.array([[metrics.accuracy([root(r["gold"]["intents"])], [root(r["predicted"]["intents"])])
                      ["accuracy"]] for r in rows], np.float64).reshape(-1, 1)
  raise ValueError(f"no per-example counts for score {score!r}")


def score_from_counts(summed: np.ndarray) -> np.ndarray:
  """[..., 3] summed (tp, fp, fn) -> micro-F1 percent; [..., 1] summed per-example scores must be divided by n
  by the caller (`resampled_scores` does)."""
  tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
  denominator = 2 * tp + fp + fn
  return np.where(denominator > 0, 200.0 * tp / np.where(denominator > 0, denominator, 1.0), 0.0)


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
  """[samples, n] example indices drawn with replacement."""
  return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def resampled_scores(counts: np.ndarray, indices: np.ndarray, chunk: int = 100) -> np.ndarray:
  """counts [n, 3] or [n, 1], indices [B, n] -> [B] the score on each resample (float64)."""
  out = np.empty(indices.shape[0], np.float64)
  for start in range(0, indices.shape[0], chunk):
    summed = counts[indices[start:start + chunk]].sum(axis=1)  # [chunk, 3 or 1]
    if counts.shape[1] == 3:
      out[start:start + chunk] = score_from_counts(summed)
    else:
      out[start:start + chunk] = summed[:, 0] / indices.shape[1]
  return out


def full_score(counts: np.ndarray) -> float:
  """The score of all n examples from their counts."""
  if counts.shape[1] == 3:
    return float(score_from_counts(counts.sum(axis=0)))
  return float(counts[:, 0].mean())


def paired_bootstrap(method_runs: Sequence[np.ndarray], baseline_runs: Sequence[np.ndarray], *, samples: int = 1000,
                     seed: int = 0) -> dict:
  """The paired bootstrap of (method - baseline) (module docstring).

  Args:
    method_runs, baseline_runs: per-example counts [n, 3] or [n, 1] of each run, rows aligned on the same n test
      examples in the same order.
  Returns {'difference' (on all examples, mean of runs), 'low', 'high' (95% interval), 'includes_zero',
  'samples', 'seed', 'examples'}.
  """
  if not method_runs or not baseline_runs:
    raise ValueError("paired_bootstrap: each side needs at least one run")
  n = method_runs[0].shape[0]
  if any(c.shape[0] != n for c in (*method_runs, *baseline_runs)):
    raise ValueError("paired_bootstrap: every run must score the same test examples")
  indices = resample_indices(n, samples, seed)
  side = lambda runs: np.mean([resampled_scores(c, indices) for c in runs], axis=0)  # noqa: E731
  differences = side(method_runs) - side(baseline_runs)
  low, high = np.percentile(differences, [2.5, 97.5])
  observed = np.mean([full_score(c) for c in method_runs]) - np.mean([full_score(c) for c in baseline_runs])
  return {"difference": float(observed), "low": float(low), "high": float(high),
          "includes_zero": bool(low <= 0.0 <= high), "samples": samples, "seed": seed, "examples": n}
