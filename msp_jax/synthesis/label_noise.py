"""Signs, readable without a model, that a labelled example's text does not say what its labels claim: the
label noise a parseable, label-exact synthetic example can still carry.

  template_leak            the text carries the prompt's own markup: an intents section (`intents:` or `||`),
                           an exemplar number (`4) `), a line break, or an HTML character reference (`&#...;`)
  degenerate_span          a span whose text is a pronoun (`it`, `this`, ...) or the name of a label of the
                           ontology (`[date_from | date_from]`): what a model writes when a label is forced on
                           a text that has no value for it
  unlabelled_capitalised   capitalised word runs, past the text's first word, that no span covers: in NER data
                           mostly entities left unlabelled, which teach a tagger to say O (compare the seeds')

  summary = noise_summary(examples, label_names)   # {'examples', 'template_leak', 'degenerate_span' (percent
                                                   #  of examples), 'unlabelled_capitalised' (per example)}

The report shows the three counts beside the seed set's own, so a reader sees how much of a synthetic set's
label noise they explain. The first two also make a filter (`is_noisy`): the experiment's `msp_noise_filter`
rows and `msp run`'s optional `drop_label_noise`.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable, Sequence

from msp_jax.data.schema import Example

_TEMPLATE_MARKUP = re.compile(r"intents?\s*:|\|\||(?:^|\s)\d+\)\s|\n|&#\w+;?")
_CAPITALISED_RUN = re.compile(r"\b[A-Z][\w'&.-]*(?:\s+[A-Z][\w'&.-]*)*")
PRONOUNS = frozenset({"it", "its", "this", "that", "these", "those", "they", "them", "he", "him", "she", "her",
                      "we", "us", "you", "i", "me"})


def template_leak(text: str) -> bool:
  """Whether the text carries the prompt's markup (module docstring)."""
  return _TEMPLATE_MARKUP.search(text) is not None


@functools.lru_cache(maxsize=16)
def _empty_span_texts(label_names: tuple[str, ...]) -> frozenset[str]:
  """Span texts that carry no value, lower case: the pronouns and every label's name as it may be written in
  text (`date_from`, `date from`). One set per ontology: the filters ask for it once per candidate."""
  forms = (form for name in label_names for form in (name.lower(), name.lower().replace("_", " ")))
  return PRONOUNS | frozenset(forms)


def degenerate_spans(example: Example, label_names: Iterable[str]) -> int:
  """Spans of `example` whose text is a pronoun or the name of one of `label_names`."""
  empty = _empty_span_texts(tuple(label_names))
  return sum(1 for s in example.spans if s.text.strip().lower() in empty)


def unlabelled_capitalised(example: Example) -> int:
  """Capitalised word runs that overlap no span; the text's first word is sentence case, not a name, so a
  run it starts counts only for its other words ("The Beatles" counts, "Paris is" does not)."""
  covered = [False] * len(example.text)
  for span in example.spans:
    covered[span.start:span.end] = [True] * (span.end - span.start)
  count = 0
  for m in _CAPITALISED_RUN.finditer(example.text):
    start = m.start()
    if start == 0:
      rest = re.search(r"\s+", m.group())
      if rest is None:
        continue
      start = rest.end()
    count += not any(covered[start:m.end()])
  return count


FILTER_VERSION = 1  # bump when `is_noisy` changes what it drops: the experiment's filter stages re-run


def is_noisy(example: Example, label_names: Iterable[str]) -> bool:
  """Whether the example shows template markup or a degenerate span (the filter of `msp_noise_filter`; the
  capitalised-run count is a property of a set, not a reason to drop one example)."""
  return template_leak(example.text) or degenerate_spans(example, label_names) > 0


def noise_summary(examples: Sequence[Example], label_names: Iterable[str]) -> dict[str, float | int | None]:
  """The three indicators over a set (module docstring); None for an empty set."""
  n = len(examples)
  if not n:
    return {"examples": 0, "template_leak": None, "degenerate_span": None, "unlabelled_capitalised": None}
  label_names = tuple(label_names)
  return {"examples": n,
          "template_leak": 100.0 * sum(template_leak(e.text) for e in examples) / n,
          "degenerate_span": 100.0 * sum(degenerate_spans(e, label_names) > 0 for e in examples) / n,
          "unlabelled_capitalised": sum(unlabelled_capitalised(e) for e in examples) / n}
