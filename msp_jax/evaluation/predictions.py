"""A trained task model's test predictions as a file, and the scores recomputed from that file alone.

`predictions.jsonl` holds one line per test example:

  {"uid": str, "text": str,
   "gold":      {"intents": [str, ...], "spans": [[start, end, label], ...], "parse": str | null},
   "predicted": {"intents": [...],      "spans": [[start, end, label], ...], "parse": str | null}}

Spans are character offsets into `text` (`text[start:end]` is the mention). `score_rows` computes every figure
a report shows from such rows, so anyone can recompute them from the file:

  multi_intent    intent_f1 (micro, over (example, intent) pairs), slot_f1 (exact start, end and label)
  ner             entity_f1 (exact start, end and type: conlleval / seqeval's entity F1)
  semantic_parse  exact_match (whole parse, whitespace collapsed), intent_accuracy (root intent), slot_f1
                  (the slots under the root)

Each F1 comes with its precision and recall (`<name>_precision`, `<name>_recall`). Percent throughout.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from msp_jax import files
from msp_jax.data.schema import Example, Span, TaskKind
from msp_jax.errors import DataError
from msp_jax.evaluation import metrics

# The score a model is selected on (validation) and a comparison leads with, per task kind.
MAIN_SCORE = {"multi_intent": "intent_f1", "ner": "entity_f1", "semantic_parse": "exact_match"}
SCORE_NAMES = {"multi_intent": ("intent_f1", "slot_f1"), "ner": ("entity_f1",),
               "semantic_parse": ("exact_match", "intent_accuracy", "slot_f1")}


def labels(intents: Sequence[str], spans: Iterable[Span], parse: str | None) -> dict:
  """The `gold` / `predicted` object of a row."""
  return {"intents": list(intents), "spans": [[s.start, s.end, s.label] for s in spans], "parse": parse}


def row(example: Example, predicted: dict) -> dict:
  """One line of the file: the example's uid, text and gold labels beside `predicted` (a `labels` object)."""
  return {"uid": example.uid, "text": example.text, "gold": labels(example.intents, example.spans, example.parse),
          "predicted": predicted}


def write(path: str | os.PathLike, rows: Iterable[dict]) -> None:
  files.write_jsonl_rows(path, rows)


def read(path: str | os.PathLike) -> list[dict]:
  """The rows of a predictions file; DataError names the line of a row without the fields above."""
  out = []
  for where, r in files.read_jsonl_rows(path):
    for side in ("gold", "predicted"):
      if not isinstance(r.get(side), dict) or not {"intents", "spans", "parse"} <= set(r[side]):
        raise DataError(f"{where}: expected '{side}' with 'intents', 'spans' and 'parse'")
    if not isinstance(r.get("text"), str):
      raise DataError(f"{where}: expected a string 'text'")
    out.append(r)
  return out


def _spans(r: dict, side: str) -> list[Span]:
  return [Span(int(s), int(e), str(label), r["text"][int(s):int(e)]) for s, e, label in r[side]["spans"]]


def _f1(name: str, scores: dict[str, float]) -> dict[str, float]:
  return {f"{name}_f1": scores["f1"], f"{name}_precision": scores["precision"], f"{name}_recall": scores["recall"]}


def score_rows(rows: Sequence[dict], task: TaskKind) -> dict[str, float]:
  """The task's scores (module docstring) over prediction rows."""
  if task not in MAIN_SCORE:
    raise DataError(f"unknown task kind {task!r}; expected one of {', '.join(MAIN_SCORE)}")
  spans = metrics.char_span_micro_f1([_spans(r, "gold") for r in rows], [_spans(r, "predicted") for r in rows])
  if task == "ner":
    return _f1("entity", spans)
  if task == "multi_intent":
    intents = metrics.intent_micro_f1([r["gold"]["intents"] for r in rows], [r["predicted"]["intents"] for r in rows])
    return {**_f1("intent", intents), **_f1("slot", spans)}
  root = lambda intents: intents[0] if intents else None
  return {**metrics.exact_match([r["gold"]["parse"] or "" for r in rows], [r["predicted"]["parse"] or "" for r in rows]),
          "intent_accuracy": metrics.accuracy([root(r["gold"]["intents"]) for r in rows],
                                              [root(r["predicted"]["intents"]) for r in rows])["accuracy"],
          **_f1("slot", spans)}
