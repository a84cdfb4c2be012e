"""Downstream and diversity metrics.

Units: precision / recall / F1 / exact match are **percent** (0-100), as the paper reports them;
Distinct@K is a **fraction** (0-1). Zero denominators give 0.0 (no predictions -> precision 0).

Standard metrics (reported first):
  intent_micro_f1  multi-label intents, micro-averaged over all (example, label) pairs.
  span_micro_f1    spans matched on exact (text, type), micro-averaged; repeats count (multisets).
                   Matching on text rather than offsets is what a generative model can be held to.
  char_span_micro_f1  spans matched on exact (start, end, type) character offsets, micro-averaged: NLU++ slot
                   F1 and CrossNER entity F1 of a task model that labels a given text. On spans read from BIO
                   tags (`spans.bio_chunks`) it equals conlleval / seqeval's entity F1.
  exact_match      TOPv2 parse strings, compared after collapsing whitespace.
  accuracy         single labels (TOPv2 root intent), percent equal.
  distinct_k       unique k-grams / all k-grams over a corpus of texts (whitespace tokens, lowercased).

Example-averaged variant (beside the standard ones, for comparison with the MSP authors, who score
P/R per example): `example_averaged_f1` computes P, R and F1 per example and averages them. It is not a
copy of the authors' scorer (which also normalises label names and gives TOPv2 half credit).

SeqIO-style metric functions `(targets: list[str], predictions: list[str]) -> dict` parse serialised
strings with `msp_jax.data.serialization.parse`; an unparseable prediction counts as an empty prediction
and is counted in `parse_failure_rate` (percent). Build one with `text_metrics(task, ontology)`.
"""

from __future__ import annotations

import collections
from typing import Callable, Hashable, Iterable, Sequence

from msp_jax.data.schema import Ontology, Span, TaskKind
from msp_jax.data.serialization import ParseFailure, parse
from msp_jax.errors import DataError


def _ratio(num: float, den: float) -> float:
  return 100.0 * num / den if den else 0.0


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
  precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "tp": float(tp), "fp": float(fp),
          "fn": float(fn)}


def _check_lengths(targets: Sequence, predictions: Sequence) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")


def _micro(targets: Sequence[collections.Counter], predictions: Sequence[collections.Counter]) -> dict[str, float]:
  _check_lengths(targets, predictions)
  tp = fp = fn = 0
  for gold, pred in zip(targets, predictions):
    hit = sum((gold & pred).values())
    tp += hit
    fp += sum(pred.values()) - hit
    fn += sum(gold.values()) - hit
  return _prf(tp, fp, fn)


def intent_micro_f1(targets: Sequence[Iterable[str]], predictions: Sequence[Iterable[str]]) -> dict[str, float]:
  """Multi-label micro P/R/F1 (percent) over label sets, one set per example; repeats are ignored."""
  return _micro([collections.Counter(set(t)) for t in targets], [collections.Counter(set(p)) for p in predictions])


def _span_key(span: Span | tuple[str, str]) -> tuple[str, str]:
  return (span.text, span.label) if isinstance(span, Span) else (span[0], span[1])


def span_micro_f1(targets: Sequence[Iterable[Span | tuple[str, str]]],
                  predictions: Sequence[Iterable[Span | tuple[str, str]]]) -> dict[str, float]:
  """Micro P/R/F1 (percent) of spans matched on exact (text, type); spans are `Span`s or (text, type)."""
  return _micro([collections.Counter(map(_span_key, t)) for t in targets],
                [collections.Counter(map(_span_key, p)) for p in predictions])


def char_span_micro_f1(targets: Sequence[Iterable[Span]], predictions: Sequence[Iterable[Span]]
                       ) -> dict[str, float]:
  """Micro P/R/F1 (percent) of spans matched on exact (start, end, label); the span text follows from the
  offsets. Repeats count (multisets), so a duplicated prediction is one hit and one false positive."""
  key = lambda span: (span.start, span.end, span.label)
  return _micro([collections.Counter(map(key, t)) for t in targets],
                [collections.Counter(map(key, p)) for p in predictions])


def accuracy(targets: Sequence[Hashable], predictions: Sequence[Hashable]) -> dict[str, float]:
  """Percent of predictions equal to their target (one label per example)."""
  _check_lengths(targets, predictions)
  return {"accuracy": _ratio(sum(t == p for t, p in zip(targets, predictions)), len(targets))}


def _normalise_ws(text: str) -> str:
  return " ".join(text.split())


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Percent of predictions equal to their target after collapsing whitespace."""
  _check_lengths(targets, predictions)
  hits = sum(_normalise_ws(t) == _normalise_ws(p) for t, p in zip(targets, predictions))
  return {"exact_match": _ratio(hits, len(targets))}


def distinct_k(texts: Iterable[str], k: int) -> dict[str, float]:
  """Distinct@k: unique k-grams / total k-grams (fraction) over all texts (lowercased whitespace tokens)."""
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  grams: collections.Counter[tuple[str, ...]] = collections.Counter()
  for text in texts:
    tokens = text.lower().split()
    grams.update(tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1))
  total = sum(grams.values())
  return {f"distinct_{k}": len(grams) / total if total else 0.0}


def example_averaged_f1(targets: Sequence[Iterable[Hashable]], predictions: Sequence[Iterable[Hashable]]) -> dict[str, float]:
  """P, R, F1 per example (label sets), averaged over examples (percent). An example with no gold and no
  predicted labels scores 100 on all three (nothing to get wrong); empty gold or prediction alone scores 0."""
  _check_lengths(targets, predictions)
  totals = [0.0, 0.0, 0.0]
  for gold, pred in zip(targets, predictions):
    gold, pred = set(gold), set(pred)
    if not gold and not pred:
      scores = (100.0, 100.0, 100.0)
    else:
      hit = len(gold & pred)
      p, r = _ratio(hit, len(pred)), _ratio(hit, len(gold))
      scores = (p, r, 2 * p * r / (p + r) if p + r else 0.0)
    totals = [a + b for a, b in zip(totals, scores)]
  n = len(targets)
  return {"precision": totals[0] / n if n else 0.0, "recall": totals[1] / n if n else 0.0,
          "f1": totals[2] / n if n else 0.0}


def _prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
  return {f"{prefix}_{key}": value for key, value in scores.items() if key in ("precision", "recall", "f1")}


def text_metrics(task: TaskKind, ontology: Ontology) -> Callable[[list[str], list[str]], dict[str, float]]:
  """A SeqIO metric fn over serialised strings for `task` (see the module docstring).

  Keys: multi_intent -> intent_* and slot_* P/R/F1; ner -> entity_*; semantic_parse -> exact_match,
  intent_* and slot_* (top-level slots); all -> parse_failure_rate. A target that does not parse is a bug
  in the data pipeline and raises DataError.
  """

  def metric_fn(targets: list[str], predictions: list[str]) -> dict[str, float]:
    _check_lengths(targets, predictions)
    gold, pred, failures = [], [], 0
    for i, (t, p) in enumerate(zip(targets, predictions)):
      g = parse(t, task, ontology)
      if isinstance(g, ParseFailure):
        raise DataError(f"target {i} does not parse ({g.reason}: {g.detail}): {t!r}")
      q = parse(p, task, ontology)
      if isinstance(q, ParseFailure):
        failures += 1
        q = None
      gold.append(g)
      pred.append(q)
    out: dict[str, float] = {"parse_failure_rate": _ratio(failures, len(targets))}
    spans = span_micro_f1([g.spans for g in gold], [q.spans if q else () for q in pred])
    if task == "ner":
      out.update(_prefixed("entity", spans))
      return out
    out.update(_prefixed("intent", intent_micro_f1([g.intents for g in gold], [q.intents if q else () for q in pred])))
    out.update(_prefixed("slot", spans))
    if task == "semantic_parse":
      out.update(exact_match([g.parse or "" for g in gold], [q.parse or "" if q else "" for q in pred]))
    return out

  metric_fn.__name__ = f"{task}_text_metrics"
  return metric_fn
