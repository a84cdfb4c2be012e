"""The experiment's statistics: per-example counts reproduce the reported scores, the paired bootstrap matches an
independent float64 reference and hand cases, and label checks (consistency filter, correctness) do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from msp_jax.data.schema import Example, Span
from msp_jax.evaluation import predictions
from msp_jax.experiment import label_checks, statistics

INTENTS = ("a", "b", "c", "d")


def random_rows(rng: np.random.Generator, n: int, *, parse: bool = False) -> list[dict]:
  rows = []
  for i in range(n):
    text = "w" * 12
    def labels():
      intents = [x for x in INTENTS if rng.random() < 0.4]
      spans = [[s, s + 2, str(rng.choice(["x", "y"]))] for s in (0, 4, 8) if rng.random() < 0.5]
      return {"intents": intents, "spans": spans, "parse": f"[IN:{intents[0] if intents else 'none'} ]" if parse
              else None}
    rows.append({"uid": f"u{i}", "text": text, "gold": labels(), "predicted": labels()})
  return rows


@pytest.mark.parametrize("score,task", [("intent_f1", "multi_intent"), ("slot_f1", "multi_intent"),
                                        ("entity_f1", "ner"), ("exact_match", "semantic_parse"),
                                        ("intent_accuracy", "semantic_parse")])
def test_example_counts_sum_to_the_reported_score(score, task):
  rows = random_rows(np.random.default_rng(3), 40, parse=task == "semantic_parse")
  counts = statistics.example_counts(rows, score)
  assert counts.shape[0] == 40
  assert statistics.full_score(counts) == pytest.approx(predictions.score_rows(rows, task)[score], abs=1e-9)


def reference_bootstrap(method_runs, baseline_runs, samples, seed):
  """Independent float64 reference: explicit loops over resamples and runs, scores from raw sums."""
  n = len(method_runs[0])
  indices = np.random.default_rng(seed).integers(0, n, size=(samples, n))
  def score(counts, idx):
    total = np.zeros(counts.shape[1], np.float64)
    for i in idx:
      total += counts[i]
    if counts.shape[1] == 1:
      return total[0] / len(idx)
    tp, fp, fn = total
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 100.0 * 2 * p * r / (p + r) if p + r else 0.0
  diffs = []
  for b in range(samples):
    m = sum(score(c, indices[b]) for c in method_runs) / len(method_runs)
    s = sum(score(c, indices[b]) for c in baseline_runs) / len(baseline_runs)
    diffs.append(m - s)
  return np.percentile(np.array(diffs, np.float64), [2.5, 97.5])


@pytest.mark.parametrize("score", ["intent_f1", "exact_match"])
def test_paired_bootstrap_matches_a_float64_reference(score):
  rng = np.random.default_rng(11)
  method = [statistics.example_counts(random_rows(rng, 30, parse=True), score) for _ in range(2)]
  baseline = [statistics.example_counts(random_rows(rng, 30, parse=True), score) for _ in range(3)]
  got = statistics.paired_bootstrap(method, baseline, samples=300, seed=5)
  low, high = reference_bootstrap(method, baseline, 300, 5)
  assert got["low"] == pytest.approx(low, abs=1e-9) and got["high"] == pytest.approx(high, abs=1e-9)
  observed = np.mean([statistics.full_score(c) for c in method]) - np.mean([statistics.full_score(c) for c in baseline])
  assert got["difference"] == pytest.approx(observed, abs=1e-12)
  assert got == statistics.paired_bootstrap(method, baseline, samples=300, seed=5)  # deterministic


def test_bootstrap_hand_cases():
  right = np.full((50, 1), 100.0)
  wrong = np.zeros((50, 1))
  clear = statistics.paired_bootstrap([right], [wrong], samples=200, seed=0)
  assert clear["difference"] == 100.0 and clear["low"] == clear["high"] == 100.0 and not clear["includes_zero"]
  same = statistics.paired_bootstrap([right], [right], samples=200, seed=0)
  assert same["difference"] == same["low"] == same["high"] == 0.0 and same["includes_zero"]
  # One example of 50 differs: the interval must reach 0 (resamples without it) and never go below it.
  one = wrong.copy()
  one[7] = 100.0
  near = statistics.paired_bootstrap([one], [wrong], samples=500, seed=1)
  assert near["difference"] == pytest.approx(2.0) and near["low"] == 0.0 and near["high"] > 0 and near["includes_zero"]
  # Micro-F1 counts: tp/fp/fn of two hand examples.
  assert statistics.full_score(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])) == pytest.approx(200 * 2 / (4 + 1 + 1))
  with pytest.raises(ValueError):
    statistics.paired_bootstrap([right], [right[:10]])


def test_mean_std_is_population_std():
  assert statistics.mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2}


def test_reproduces_compares_the_labels_a_flat_model_can_write():
  intents = Example("e", "d", "book a room", intents=("book", "room"))
  assert label_checks.reproduces(intents, predictions.labels(["room", "book"], (), None), "multi_intent")
  assert not label_checks.reproduces(intents, predictions.labels(["book"], (), None), "multi_intent")
  ner = Example("n", "d", "Abba sang", spans=(Span(0, 4, "band", "Abba"),))
  assert label_checks.reproduces(ner, predictions.labels([], [Span(0, 4, "band", "Abba")], None), "ner")
  assert not label_checks.reproduces(ner, predictions.labels([], [Span(0, 4, "person", "Abba")], None), "ner")
  parse = Example("p", "d", "rain today", intents=("IN:GET_WEATHER",), spans=(Span(5, 10, "SL:DATE", "today"),),
                  parse="[IN:GET_WEATHER rain [SL:DATE today ] ]")
  flat = predictions.labels(["IN:GET_WEATHER"], [Span(5, 10, "SL:DATE", "today")], "whatever")
  assert label_checks.reproduces(parse, flat, "semantic_parse")
  other_root = predictions.labels(["IN:OTHER"], [Span(5, 10, "SL:DATE", "today")], None)
  assert not label_checks.reproduces(parse, other_root, "semantic_parse")
  result = label_checks.correctness([intents, intents], [predictions.labels(["book", "room"], (), None),
                                                         predictions.labels([], (), None)], "multi_intent")
  assert result == {"examples": 2, "reproduced": 1, "correctness": 50.0}
  assert label_checks.correctness([], [], "ner")["correctness"] is None


def test_consistent_fill_drops_contradicted_and_fills_from_the_next_best():
  ranked = ["k0", "k1", "k2", "n0", "n1", "n2"]        # kept set of 3, then the rest best first
  agrees = [True, False, True, False, True, True]
  kept, counts = label_checks.consistent_fill(ranked, agrees, target=3, kept_set_size=3)
  assert kept == ["k0", "k2", "n1"]
  assert counts == {"contradicted_in_kept_set": 1, "contradicted_in_fill": 1, "filled": 1, "short_of_target": 0}
  _, named = label_checks.consistent_fill(ranked, agrees, target=3, kept_set_size=3, dropped="noisy")
  assert named == {"noisy_in_kept_set": 1, "noisy_in_fill": 1, "filled": 1, "short_of_target": 0}
  kept, counts = label_checks.consistent_fill(ranked, [False] * 6, target=3, kept_set_size=3)
  assert kept == [] and counts["short_of_target"] == 3


def test_complete_spans_adds_the_model_spans_that_overlap_none_of_the_example_s_own():
  text = "Abba and Queen played in Stockholm"
  ner = Example("n", "d", text, spans=(Span(0, 4, "band", "Abba"),))
  predicted = predictions.labels([], [Span(0, 4, "person", "Abba"), Span(2, 12, "band", "ba and Que"),
                                      Span(9, 14, "band", "Queen"), Span(25, 34, "location", "Stockholm")], None)
  completed = label_checks.complete_spans(ner, predicted, "ner")
  assert [(s.start, s.end, s.label, s.text) for s in completed.spans] == [
      (0, 4, "band", "Abba"), (9, 14, "band", "Queen"), (25, 34, "location", "Stockholm")]
  assert completed.text == text and completed.uid == "n"
  assert label_checks.complete_spans(ner, predictions.labels([], [], None), "ner") is ner  # nothing to add
  intents = Example("i", "d", "book for two tonight", intents=("book",), spans=(Span(9, 12, "people", "two"),))
  completed = label_checks.complete_spans(
      intents, predictions.labels(["other"], [Span(13, 20, "time", "tonight")], None), "multi_intent")
  assert completed.intents == ("book",) and [s.label for s in completed.spans] == ["people", "time"]

  parse = Example("p", "d", "rain in Paris today", intents=("IN:GET_WEATHER",),
                  spans=(Span(8, 13, "SL:LOCATION", "Paris"),),
                  parse="[IN:GET_WEATHER rain in [SL:LOCATION Paris ] today ]")
  completed = label_checks.complete_spans(
      parse, predictions.labels(["IN:OTHER"], [Span(14, 19, "SL:DATE_TIME", "today")], None), "semantic_parse")
  assert completed.parse == "[IN:GET_WEATHER rain in [SL:LOCATION Paris ] [SL:DATE_TIME today ] ]"
  assert [(s.text, s.label) for s in completed.spans] == [("Paris", "SL:LOCATION"), ("today", "SL:DATE_TIME")]
  nested = Example("q", "d", "rain near me", intents=("IN:GET_WEATHER", "IN:GET_LOCATION"),
                   spans=(Span(5, 12, "SL:LOCATION", "near me"),),
                   parse="[IN:GET_WEATHER rain [SL:LOCATION [IN:GET_LOCATION near me ] ] ]")
  assert label_checks.complete_spans(
      nested, predictions.labels([], [Span(0, 4, "SL:WEATHER", "rain")], None), "semantic_parse") is nested
