"""Does a task model reproduce a synthetic example's labels: the consistency filter (PromDA's: drop synthetic
examples whose labels a model trained on the seeds alone contradicts) and the correctness metric (the share of
kept examples an oracle model, trained on the domain's non-test data, reproduces) both ask this.

A model *reproduces* an example's labels when it predicts, for the labels a flat task model can write:

  multi_intent    the same set of intents
  ner             the same multiset of (start, end, type) entity spans
  semantic_parse  the same root intent and the same slots under the root (start, end, label); a nested parse's
                  inner structure is beyond the flat model (`evaluation.topv2_parse`), so it is not compared

`predicted` objects are `evaluation.predictions.labels` dicts, as `task_models.predict` returns them.

`complete_spans` asks the model the other way round: which entities or slots it finds where the generator wrote
none (the span completion of `msp_span_completion`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence, TypeVar

from msp_jax.data import topv2
from msp_jax.data.schema import Example, Span, TaskKind
from msp_jax.evaluation import predictions, topv2_parse

T = TypeVar("T")


def _spans(spans) -> collections.Counter:
  return collections.Counter((int(s[0]), int(s[1]), str(s[2])) for s in spans)


def labels_reproduced(gold: dict, predicted: dict, task: TaskKind) -> bool:
  """Whether `predicted` carries the `gold` labels (module docstring); both `predictions.labels` dicts, as
  the rows of a predictions file hold them."""
  if task == "multi_intent":
    return set(gold["intents"]) == set(predicted["intents"])
  if task == "ner":
    return _spans(gold["spans"]) == _spans(predicted["spans"])
  root = lambda intents: intents[0] if intents else None  # noqa: E731
  return (root(list(gold["intents"])) == root(list(predicted["intents"]))
          and _spans(gold["spans"]) == _spans(predicted["spans"]))


def reproduces(example: Example, predicted: dict, task: TaskKind) -> bool:
  """Whether `predicted` (a `predictions.labels` dict) carries `example`'s labels (module docstring)."""
  return labels_reproduced(predictions.labels(example.intents, example.spans, example.parse), predicted, task)


def complete_spans(example: Example, predicted: dict, task: TaskKind) -> Example:
  """`example` with the spans of `predicted` (a `predictions.labels` dict) that overlap none of its own added:
  the entities or slots a generator left unlabelled, filled in by a task model, while every label the example
  was generated with stays. A TOPv2 example is rebuilt from the flat parse of its root intent and the merged
  slots (a nested parse is returned unchanged: a flat model cannot add to it)."""
  own = [(s.start, s.end) for s in example.spans]
  added = [Span(int(a), int(b), str(label), example.text[int(a):int(b)]) for a, b, label in predicted["spans"]
           if not any(int(a) < end and start < int(b) for start, end in own)]
  if not added:
    return example
  spans = tuple(sorted((*example.spans, *added), key=lambda s: (s.start, -s.end)))
  if task != "semantic_parse":
    return dataclasses.replace(example, spans=spans)
  if example.parse is None or not example.intents or not topv2_parse.is_flat(example.parse):
    return example
  parse = topv2_parse.example_parse(example, example.intents[0], spans)
  return topv2.example_from_parse(parse, uid=example.uid, domain=example.domain, text=example.text)


def correctness(examples: Sequence[Example], predicted: Sequence[dict], task: TaskKind) -> dict:
  """{'examples', 'reproduced', 'correctness' (percent; None without examples)}: how many of `examples` the
  model's `predicted` labels reproduce."""
  if len(examples) != len(predicted):
    raise ValueError(f"{len(examples)} examples but {len(predicted)} predictions")
  hits = sum(reproduces(e, p, task) for e, p in zip(examples, predicted))
  return {"examples": len(examples), "reproduced": hits,
          "correctness": 100.0 * hits / len(examples) if examples else None}


def consistent_fill(ranked: Sequence[T], agrees: Sequence[bool], target: int, kept_set_size: int,
                    dropped: str = "contradicted") -> tuple[list[T], dict[str, int]]:
  """The first `target` items of `ranked` (the denoiser's kept set, its first `kept_set_size` items, then the
  other candidates best first) that a filter accepts (`agrees[i]`: the seed model does not contradict them, or
  they show no label noise).

  Returns (kept, {'<dropped>_in_kept_set', '<dropped>_in_fill', 'filled', 'short_of_target'}).
  """
  if len(ranked) != len(agrees):
    raise ValueError(f"{len(ranked)} candidates but {len(agrees)} agreement flags")
  in_kept_set_key, in_fill_key = f"{dropped}_in_kept_set", f"{dropped}_in_fill"
  kept, counts = [], {in_kept_set_key: 0, in_fill_key: 0, "filled": 0}
  for i, (item, ok) in enumerate(zip(ranked, agrees)):
    if len(kept) == target:
      break
    in_kept_set = i < kept_set_size
    if not ok:
      counts[in_kept_set_key if in_kept_set else in_fill_key] += 1
      continue
    kept.append(item)
    counts["filled"] += 0 if in_kept_set else 1
  counts["short_of_target"] = target - len(kept)
  return kept, counts
