"""TOPv2 flat parses: a root intent and the slots under it, written back as a TOP parse string.

The task model predicts one root intent and BIO slots over the utterance; `flat_parse` turns them into
`[IN:ROOT words [SL:SLOT words ] words ]`. A parse with an intent inside a slot (`[SL:LOCATION [IN:GET_LOCATION
...] ]`) or an empty slot is beyond such a model: `is_flat` tells them apart, and `flat_ceiling` is the share
of a test set the model could get exactly right (TOPv2 weather test: 2 of 5,682 parses are nested).

Words: a TOP parse spells the utterance in its own tokenisation (`What's it like?` is `What 's it like ?`).
That tokenisation belongs to the input, not to the labels, so the words of an example come from its parse
when it has one (`parse_words`), else from a regular expression that splits words and punctuation the same way
in most cases. Slots snap to whole words: a word is in a predicted slot when their characters overlap.
"""

from __future__ import annotations

import re
from typing import Sequence

from msp_jax.data import topv2
from msp_jax.data.schema import Example, Span
from msp_jax.errors import DataError

# Words, contractions split before the apostrophe ("What's" -> "What", "'s"), and single punctuation marks.
_WORD_RE = re.compile(r"'\w+|\w+(?='\w)|\w+|[^\w\s]")


def is_flat(parse: str) -> bool:
  """True when every slot sits directly under the root intent and holds words only (no intent, not empty)."""
  tree = topv2.parse_top(parse)
  return all(not slot.children and slot.end > slot.start for slot in tree.root.children)


def flat_ceiling(examples: Sequence[Example]) -> dict[str, float]:
  """{'parses', 'nested', 'ceiling'}: how many gold parses a flat model cannot produce, and the best exact
  match (percent) it could reach."""
  parses = [e.parse for e in examples if e.parse is not None]
  nested = sum(not is_flat(p) for p in parses)
  return {"parses": float(len(parses)), "nested": float(nested),
          "ceiling": 100.0 * (len(parses) - nested) / len(parses) if parses else 0.0}


def root_intent(example: Example) -> str:
  """The root intent: the first intent in pre-order (TOPv2 readers keep that order)."""
  if not example.intents:
    raise DataError(f"example {example.uid!r} has no intent; a TOPv2 example needs a root intent")
  return example.intents[0]


def parse_words(example: Example) -> tuple[tuple[str, ...], list[tuple[int, int]]]:
  """The example's TOP words and their character [start, end) in `example.text`.

  From the example's parse when it has one whose words spell the text, else split by `_WORD_RE`.
  """
  if example.parse is not None:
    words = topv2.parse_top(example.parse).words
    offsets = topv2.align_words(example.text, words)
    if offsets is not None:
      return words, offsets
  matches = list(_WORD_RE.finditer(example.text))
  return tuple(m.group() for m in matches), [m.span() for m in matches]


def flat_parse(intent: str, words: Sequence[str], offsets: Sequence[tuple[int, int]], spans: Sequence[Span]
               ) -> str:
  """`[IN:intent w1 [SL:x w2 w3 ] w4 ]`: each span covers the words its characters overlap.

  Spans that would share a word with an earlier span are dropped (a slot owns whole words); spans over no
  word are dropped too.
  """
  owner: list[Span | None] = [None] * len(words)
  for span in sorted(spans, key=lambda s: (s.start, -s.end)):
    covered = [i for i, (start, end) in enumerate(offsets) if start < span.end and span.start < end]
    if covered and all(owner[i] is None for i in range(covered[0], covered[-1] + 1)):
      for i in range(covered[0], covered[-1] + 1):
        owner[i] = span
  tokens = [f"[{intent}"]
  for i, word in enumerate(words):
    if owner[i] is not None and (i == 0 or owner[i - 1] is not owner[i]):
      tokens.append(f"[{owner[i].label}")
    tokens.append(word)
    if owner[i] is not None and (i + 1 == len(words) or owner[i + 1] is not owner[i]):
      tokens.append("]")
  tokens.append("]")
  return " ".join(tokens)


def example_parse(example: Example, intent: str, spans: Sequence[Span]) -> str:
  """`flat_parse` over the words of `example` (see `parse_words`)."""
  words, offsets = parse_words(example)
  return flat_parse(intent, words, offsets, spans)
