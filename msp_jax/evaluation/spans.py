"""Character spans <-> BIO tags over word pieces, the bridge between `Example.spans` and a token tagger.

A tagger reads word pieces; labels live as character spans of the original text. Each word piece carries the
characters it came from (`wordpiece.WordPieces.offsets`, [CLS]/[SEP] have the empty span (0, 0)):

  tags_for_pieces(offsets, spans, tag_index)   training targets: B-<label> on a span's first piece, I-<label> on
                                              the pieces after it, O elsewhere, IGNORE on the special pieces;
  spans_from_tags(tags, offsets, text)         decoded tags -> `Span`s of `text` (each from its first piece's
                                              start to its last piece's end, so the whitespace and punctuation
                                              between them come back exactly as in the text).

A piece belongs to a span when it starts inside the span; a span whose edges fall inside a word piece is
reachable only up to that piece (`unreachable_spans` counts them: none in NLU++, CrossNER or TOPv2 weather).
BIO cannot express nesting: `tagging_spans` keeps the outermost of nested spans (NLU++ has two nested pairs).

`bio_chunks` reads any tag sequence, valid or not, with conlleval's rules (what seqeval's default mode does):
an `I-x` after `O` or after another type starts a new chunk. The constrained decoder never produces such a
sequence, but metrics on arbitrary sequences must agree with seqeval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from msp_jax.data.schema import Span
from msp_jax.data.serialization import span_sort_key

OUTSIDE = "O"
IGNORE = -1  # the target of a piece the loss skips ([CLS], [SEP], padding)


def tag_names(span_labels: Sequence[str]) -> tuple[str, ...]:
  """('O', 'B-a', 'I-a', 'B-b', 'I-b', ...): tag 0 is O, then B/I pairs in the order of `span_labels`."""
  return (OUTSIDE,) + tuple(f"{prefix}-{label}" for label in span_labels for prefix in ("B", "I"))


def tag_type(tag: str) -> tuple[str, str]:
  """'B-person' -> ('B', 'person'); 'O' -> ('O', '')."""
  if tag == OUTSIDE:
    return OUTSIDE, ""
  prefix, _, label = tag.partition("-")
  return prefix, label


def is_valid_bio(tags: Sequence[str]) -> bool:
  """True when every `I-x` continues a `B-x` or `I-x` of the same type."""
  previous = OUTSIDE
  for tag in tags:
    prefix, label = tag_type(tag)
    if prefix == "I" and (previous == OUTSIDE or tag_type(previous)[1] != label):
      return False
    previous = tag
  return True


def bio_chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
  """Chunks (first, last + 1, type) of a BIO sequence read with conlleval's rules (valid or not).

  A chunk ends before `O`, before `B-*` and before an `I-y` of another type; it starts at `B-*` and at any
  `I-x` that does not continue an `x` chunk.
  """
  chunks = []
  start, current = None, None
  for i, tag in enumerate(list(tags) + [OUTSIDE]):
    prefix, label = tag_type(tag)
    continues = prefix == "I" and current == label
    if start is not None and not continues:
      chunks.append((start, i, current))
      start, current = None, None
    if prefix in ("B", "I") and not continues:
      start, current = i, label
  return chunks


def tagging_spans(spans: Sequence[Span]) -> tuple[Span, ...]:
  """The outermost of nested spans (BIO has one layer), in text order; spans that cross are a caller's bug."""
  kept: list[Span] = []
  for span in sorted(spans, key=span_sort_key):
    if kept and span.start < kept[-1].end:
      continue  # inside the previous outer span
    kept.append(span)
  return tuple(kept)


def tags_for_pieces(offsets: Sequence[tuple[int, int]], spans: Sequence[Span], tag_index: dict[str, int]
                    ) -> np.ndarray:
  """BIO tag ids [pieces] int32 for one text: tag_index maps 'O', 'B-x', 'I-x' to ids; IGNORE on empty pieces.

  Spans are taken through `tagging_spans`; a piece is in a span when its first character is.
  """
  tags = np.full(len(offsets), tag_index[OUTSIDE], np.int32)
  starts = np.array([start for start, _ in offsets], np.int64)
  empty = np.array([start == end for start, end in offsets], bool)
  for span in tagging_spans(spans):
    inside = np.flatnonzero((starts >= span.start) & (starts < span.end) & ~empty)
    if inside.size:
      tags[inside[0]] = tag_index[f"B-{span.label}"]
      tags[inside[1:]] = tag_index[f"I-{span.label}"]
  tags[empty] = IGNORE
  return tags


def spans_from_tags(tags: Sequence[str], offsets: Sequence[tuple[int, int]], text: str) -> tuple[Span, ...]:
  """Character spans of `text` from per-piece tags (conlleval chunks; pieces with empty offsets are skipped).

  tags and offsets are aligned, one per piece; a chunk spans text[first piece start : last piece end].
  """
  real = [i for i, (start, end) in enumerate(offsets) if end > start]
  spans = []
  for first, last, label in bio_chunks([tags[i] for i in real]):
    start, end = offsets[real[first]][0], offsets[real[last - 1]][1]
    spans.append(Span(start, end, label, text[start:end]))
  return tuple(spans)


def unreachable_spans(spans: Sequence[Span], offsets: Sequence[tuple[int, int]]) -> int:
  """How many of `tagging_spans(spans)` no piece sequence spells exactly (an edge inside a piece, or cut off
  by truncation): the tagger cannot predict them with the right offsets."""
  starts = {start for start, end in offsets if end > start}
  ends = {end for start, end in offsets if end > start}
  return sum(span.start not in starts or span.end not in ends for span in tagging_spans(spans))
