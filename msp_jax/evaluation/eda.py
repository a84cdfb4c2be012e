"""Label-preserving Easy Data Augmentation (Wei and Zou 2019) for intent, span and TOP parse data.

An EDA copy applies one operation, max(1, alpha * words) times, to the words of a seed example:

  swap     two words trade places;
  delete   a word goes;
  insert   a word of the same utterance goes in at a random place;
  mention  a span's text becomes another seed mention of the same label (mention replacement, the standard NER
           augmentation of Dai and Adel 2020); offered only when such a mention exists.

Operations touch only words outside spans, so every span keeps its label and its text; offsets are
recomputed. The text is cut into units: whitespace-separated words, except that the words a span covers (with
any punctuation glued to them) form one protected unit that moves as a whole and is never deleted, split or
duplicated. The copy is the units joined by single spaces. A TOPv2 example is cut the same way at its parse's
root: the words directly under the root intent are free, every slot (with whatever it nests) is a protected
unit, and the copy is re-serialised as a parse (`[IN:ROOT ... ]`) and read back, so it is always a valid parse
whose slots keep their labels and words. Intents are kept (a TOP copy's are read back from its parse).

EDA's fourth operation, synonym replacement, needs a thesaurus (WordNet), which is not available offline; random
insertion re-inserts a word of the utterance instead of a synonym. On an example without spans the operations
draw the same random numbers as the original span-free baseline did, so intent-only copies are unchanged.

Deterministic given the generator.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from msp_jax.data import topv2
from msp_jax.data.schema import Example, Span
from msp_jax.data.serialization import span_sort_key

OPERATIONS = ("swap", "delete", "insert", "mention")
Mentions = dict[str, tuple[str, ...]]  # label -> distinct mention texts (TOP: a slot's tokens joined by spaces)


@dataclasses.dataclass(frozen=True)
class _Unit:
  """A word, or a protected group holding spans: `spans` are (start, end, label) relative to `text`. A TOP slot
  unit keeps its parse tokens in `text` (`[SL:X words ]`) and its label in `slot`."""

  text: str
  spans: tuple[tuple[int, int, str], ...] = ()
  slot: str | None = None

  @property
  def free(self) -> bool:
    return not self.spans and self.slot is None


def _text_units(example: Example) -> list[_Unit]:
  """Whitespace words, merged wherever a span covers more than one of them (with the span's own edges)."""
  ranges = [m.span() for m in re.finditer(r"\S+", example.text)] + [(s.start, s.end) for s in example.spans]
  merged: list[list[int]] = []
  for start, end in sorted(ranges):
    if merged and start < merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  units = []
  for start, end in merged:
    inside = tuple((s.start - start, s.end - start, s.label) for s in sorted(example.spans, key=span_sort_key)
                   if start <= s.start and s.end <= end)
    units.append(_Unit(example.text[start:end], inside))
  return units


def _node_tokens(node: topv2.TopNode, words: Sequence[str]) -> list[str]:
  """The parse tokens of one bracket: `[LABEL`, its words and nested brackets in order, `]`."""
  tokens, position = [f"[{node.label}"], node.start
  for child in node.children:
    tokens += list(words[position:child.start]) + _node_tokens(child, words)
    position = child.end
  return tokens + list(words[position:node.end]) + ["]"]


def _parse_units(parse: str) -> tuple[str, list[_Unit]]:
  """(root intent label, units directly under it)."""
  tree = topv2.parse_top(parse)
  units, position = [], tree.root.start
  for child in tree.root.children:
    units += [_Unit(w) for w in tree.words[position:child.start]]
    units.append(_Unit(" ".join(_node_tokens(child, tree.words)), slot=child.label))
    position = child.end
  units += [_Unit(w) for w in tree.words[position:tree.root.end]]
  return tree.root.label, units


def mentions_of(seeds: Sequence[Example]) -> Mentions:
  """label -> the distinct mentions of that label among the seeds, in first-seen order: span texts, or for
  TOPv2 the slots under the root (as parse tokens)."""
  found: dict[str, dict[str, None]] = {}
  for example in seeds:
    if example.parse is not None:
      for unit in _parse_units(example.parse)[1]:
        if unit.slot is not None:
          found.setdefault(unit.slot, {})[unit.text] = None
    else:
      for span in example.spans:
        found.setdefault(span.label, {})[span.text] = None
  return {label: tuple(texts) for label, texts in found.items()}


def _replaceable(units: list[_Unit], mentions: Mentions) -> list[tuple[int, int]]:
  """(unit, span) pairs whose mention has an alternative: TOP slots (span index 0) or plain spans that nest
  with no other span of their unit."""
  out = []
  for u, unit in enumerate(units):
    if unit.slot is not None:
      if set(mentions.get(unit.slot, ())) - {unit.text}:
        out.append((u, 0))
      continue
    for k, (start, end, label) in enumerate(unit.spans):
      alone = all(e <= start or end <= s for j, (s, e, _) in enumerate(unit.spans) if j != k)
      if alone and set(mentions.get(label, ())) - {unit.text[start:end]}:
        out.append((u, k))
  return out


def _replace_mention(unit: _Unit, k: int, mentions: Mentions, rng: np.random.Generator) -> _Unit:
  if unit.slot is not None:
    options = [m for m in mentions[unit.slot] if m != unit.text]
    return dataclasses.replace(unit, text=options[int(rng.integers(len(options)))])
  start, end, label = unit.spans[k]
  options = [m for m in mentions[label] if m != unit.text[start:end]]
  mention = options[int(rng.integers(len(options)))]
  shift = len(mention) - (end - start)
  # The other spans of the unit are wholly before or wholly after this one (`_replaceable`).
  spans = tuple((s, s + len(mention), l) if j == k else (s, e, l) if e <= start else (s + shift, e + shift, l)
                for j, (s, e, l) in enumerate(unit.spans))
  return _Unit(unit.text[:start] + mention + unit.text[end:], spans)


def _apply(units: list[_Unit], operation: str, changes: int, mentions: Mentions, rng: np.random.Generator
           ) -> list[_Unit]:
  units = list(units)
  for _ in range(changes):
    free = [i for i, unit in enumerate(units) if unit.free]
    if operation == "mention":
      options = _replaceable(units, mentions)
      if not options:
        break
      u, k = options[int(rng.integers(len(options)))]
      units[u] = _replace_mention(units[u], k, mentions, rng)
    elif operation == "swap" and len(free) >= 2 and len(units) >= 2:
      i, j = (free[x] for x in rng.choice(len(free), size=2, replace=False))
      units[i], units[j] = units[j], units[i]
    elif operation == "delete" and free and len(units) >= 2:
      del units[free[int(rng.integers(len(free)))]]
    elif free:  # insert: a free word of the utterance at a random place between units
      position = int(rng.integers(len(units) + 1))
      units.insert(position, units[free[int(rng.integers(len(free)))]])
  return units


def eda_copy(example: Example, rng: np.random.Generator, mentions: Mentions | None = None, alpha: float = 0.1,
             uid: str | None = None) -> Example:
  """One EDA copy of `example` (module docstring): intents kept, spans kept with their labels and texts.

  mentions: the mention pool for mention replacement (`mentions_of(seeds)`); None leaves it out.
  A one-word utterance is only ever grown by insertion (deleting or swapping its only word would leave nothing,
  or the same text).
  """
  mentions = mentions or {}
  if example.parse is not None:
    root, units = _parse_units(example.parse)
  else:
    root, units = None, _text_units(example)
  words = sum(len(unit.text.split()) if unit.free else 1 for unit in units)
  changes = max(1, round(alpha * words))
  operations = OPERATIONS[:3] + (("mention",) if _replaceable(units, mentions) else ())
  operation = "insert" if len(units) < 2 else operations[int(rng.integers(len(operations)))]
  units = _apply(units, operation, changes, mentions, rng)
  uid = uid or f"{example.uid}/eda"
  if root is not None:
    parse = " ".join([f"[{root}"] + [unit.text for unit in units] + ["]"])
    return topv2.example_from_parse(parse, uid=uid, domain=example.domain)
  text, spans, position = [], [], 0
  for unit in units:
    spans += [Span(position + s, position + e, label, unit.text[s:e]) for s, e, label in unit.spans]
    text.append(unit.text)
    position += len(unit.text) + 1
  return dataclasses.replace(example, uid=uid, text=" ".join(text), spans=tuple(sorted(spans, key=span_sort_key)))


def eda_examples(seeds: Sequence[Example], count: int, seed: int = 0, alpha: float = 0.1) -> list[Example]:
  """`count` EDA copies, cycling through the seeds in order (each seed augmented about equally often); mention
  replacement draws from the seeds' own mentions."""
  if count and not seeds:
    raise ValueError("eda_examples: no seed examples to augment")
  rng = np.random.default_rng(seed)
  mentions = mentions_of(seeds)
  return [eda_copy(seeds[i % len(seeds)], rng, mentions, alpha, uid=f"{seeds[i % len(seeds)].uid}/eda{i // len(seeds)}")
          for i in range(count)]
