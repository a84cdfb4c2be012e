"""TOPv2 reader (Chen et al. 2020): 8 domains of bracketed task-oriented parses.

Files (`<data_dir>/topv2/`): `{domain}_{train,eval,test}.tsv` with header `domain utterance semantic_parse`,
and for reminder and weather the low-resource splits `low_resource_splits/{domain}_{train,valid}_25spis.tsv`
(third column named `seqlogical`, same format). TSVs are read with quoting off: a quote is a literal
character of an utterance.

A parse is `[IN:INTENT words [SL:SLOT words ] [SL:SLOT [IN:INTENT ...] ] ... ]`: one root intent; an intent
holds words and slots, a slot holds words and intents. Each `Example` keeps:
  text     the utterance column (the parse's tokens differ in spacing: `it?` is `it ?` in the parse);
  intents  every `IN:` label in pre-order (first occurrence kept, duplicates dropped);
  spans    the slots directly under the root intent, as character offsets into the utterance, found by
           aligning the parse's words to the utterance left to right;
  parse    the parse string as shipped.
Labels keep their `IN:`/`SL:` prefixes, so intents and slots share one ontology namespace without clashes.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re

from msp_jax.data.schema import Attribute, DomainData, Example, Ontology, Span
from msp_jax.errors import DataError

DOMAINS = ("alarm", "event", "messaging", "music", "navigation", "reminder", "timer", "weather")
# Domains whose low-resource (25 samples per intent and slot) splits ship with TOPv2 v1.1.
LOW_RESOURCE_DOMAINS = ("reminder", "weather")
FEWSHOT_SPIS = 25

# split name -> file name pattern under topv2/ (paper/authors: dev is `*_eval.tsv`).
_SPLIT_FILES = {
    "train": "{domain}_train.tsv",
    "validation": "{domain}_eval.tsv",
    "test": "{domain}_test.tsv",
}
_FEWSHOT_FILES = {
    "fewshot_train": "low_resource_splits/{domain}_train_{spis}spis.tsv",
    "fewshot_validation": "low_resource_splits/{domain}_valid_{spis}spis.tsv",
}

# An opening bracket with its label, a closing bracket, or a word. Words never contain brackets, so
# `cold]` still reads as `cold` `]` (tolerant to LM output; the shipped files always space them).
_TOKEN_RE = re.compile(r"\[[^\s\[\]]*|\]|[^\s\[\]]+")
_LABEL_RE = re.compile(r"(IN|SL):[^\s\[\]]+")


class TopParseError(ValueError):
  """A malformed TOP parse. `reason` is one of `serialization.PARSE_FAILURE_REASONS`."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass
class TopNode:
  """One bracket of a parse: its label and the half-open range [start, end) of the words it covers."""

  label: str
  start: int
  end: int = -1
  children: list[TopNode] = dataclasses.field(default_factory=list)

  @property
  def is_intent(self) -> bool:
    return self.label.startswith("IN:")


@dataclasses.dataclass(frozen=True)
class TopTree:
  """A parsed TOP string: its words (the utterance as the parse tokenises it) and the root intent."""

  words: tuple[str, ...]
  root: TopNode
  tokens: tuple[str, ...]   # brackets and words; " ".join(tokens) is the canonical parse string

  def intents(self) -> tuple[str, ...]:
    """Every intent label in pre-order, first occurrence kept."""
    seen: dict[str, None] = {}
    stack = [self.root]
    while stack:
      node = stack.pop()
      if node.is_intent:
        seen.setdefault(node.label, None)
      stack.extend(reversed(node.children))
    return tuple(seen)

  def labels(self) -> set[str]:
    """Every intent and slot label anywhere in the tree."""
    out, stack = set(), [self.root]
    while stack:
      node = stack.pop()
      out.add(node.label)
      stack.extend(node.children)
    return out


def parse_top(parse: str) -> TopTree:
  """Parses a TOP bracket string; raises `TopParseError` (never anything else) when it is malformed."""
  tokens = _TOKEN_RE.findall(parse)
  if not tokens:
    raise TopParseError("empty", "the parse has no tokens")
  words: list[str] = []
  stack: list[TopNode] = []
  root: TopNode | None = None
  for tok in tokens:
    if tok[0] == "[":
      label = tok[1:]
      if root is not None and not stack:
        raise TopParseError("trailing_text", f"{tok!r} after the root intent closed")
      if not _LABEL_RE.fullmatch(label):
        raise TopParseError("malformed_span", f"bracket label {label!r} is not IN:<NAME> or SL:<NAME>")
      node = TopNode(label, len(words))
      if stack:
        parent = stack[-1]
        # TOP alternates: intents hold slots, slots hold intents (words may sit in either).
        if parent.is_intent == node.is_intent:
          raise TopParseError("malformed_span", f"{label} directly inside {parent.label}")
        parent.children.append(node)
      elif not node.is_intent:
        raise TopParseError("bad_root", f"the parse must start with an intent, not {label}")
      else:
        root = node
      stack.append(node)
    elif tok == "]":
      if not stack:
        raise TopParseError("unbalanced_brackets", "a ']' closes no bracket")
      node = stack.pop()
      node.end = len(words)  # may equal start: the shipped data has a few empty slots (`[SL:DATE_TIME ]`)
    else:
      if not stack:
        if root is None:
          raise TopParseError("bad_root", f"word {tok!r} before the root intent")
        raise TopParseError("trailing_text", f"word {tok!r} after the root intent closed")
      words.append(tok)
  if stack:
    raise TopParseError("unbalanced_brackets", f"{len(stack)} bracket(s) left open")
  assert root is not None
  return TopTree(tuple(words), root, tuple(tokens))


def align_words(text: str, words: tuple[str, ...]) -> list[tuple[int, int]] | None:
  """Character [start, end) of each word in `text`, left to right, skipping only whitespace between words.

  Returns None when the words are not the text's non-space content in order.
  """
  offsets = []
  pos = 0
  for word in words:
    start = text.find(word, pos)
    if start < 0 or (start > pos and not text[pos:start].isspace()):
      return None
    pos = start + len(word)
    offsets.append((start, pos))
  if pos < len(text) and not text[pos:].isspace():
    return None
  return offsets


def top_spans(tree: TopTree, text: str, offsets: list[tuple[int, int]]) -> tuple[Span, ...]:
  """The slots directly under the root intent as character spans of `text` (`offsets` from `align_words`).

  A slot with no words (a few exist in the shipped data) becomes an empty span after the previous word.
  """
  spans = []
  for node in tree.root.children:
    if node.end > node.start:
      start, end = offsets[node.start][0], offsets[node.end - 1][1]
    else:  # an empty slot sits right after the previous word
      start = end = offsets[node.start - 1][1] if node.start else 0
    spans.append(Span(start, end, node.label, text[start:end]))
  return tuple(spans)


def example_from_parse(parse: str, *, uid: str, domain: str, text: str | None = None) -> Example:
  """Builds an `Example` from a TOP parse; `text` defaults to the parse's words joined by single spaces.

  Raises `TopParseError` for a malformed parse, and for words that do not align with `text`.
  """
  tree = parse_top(parse)
  if text is None:
    text = " ".join(tree.words)
  offsets = align_words(text, tree.words)
  if offsets is None:
    raise TopParseError("span_not_in_text", f"the parse's words do not spell the utterance {text!r}")
  return Example(uid=uid, domain=domain, text=text, intents=tree.intents(),
                 spans=top_spans(tree, text, offsets), parse=parse)


def read_topv2_file(path: str | os.PathLike, domain: str, *, uid_prefix: str) -> tuple[tuple[Example, ...], set[str]]:
  """Reads one TOPv2 TSV -> (examples, every IN:/SL: label seen). Raises `DataError` with file and line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: TOPv2 file not found")
  examples: list[Example] = []
  labels: set[str] = set()
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  except csv.Error as e:
    raise DataError(f"{path}: unreadable TSV ({e})") from None
  if not rows:
    raise DataError(f"{path}: empty file (expected a header 'domain<TAB>utterance<TAB>semantic_parse')")
  header = rows[0]
  if len(header) != 3 or header[:2] != ["domain", "utterance"]:
    raise DataError(f"{path}:1: header {header!r} is not 'domain<TAB>utterance<TAB>semantic_parse|seqlogical'")
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 3:
      raise DataError(f"{path}:{line}: expected 3 tab-separated fields (domain, utterance, parse), got {len(row)}")
    _, utterance, parse = row
    if not utterance.strip():
      raise DataError(f"{path}:{line}: empty utterance")
    try:
      tree = parse_top(parse)
    except TopParseError as e:
      raise DataError(f"{path}:{line}: bad TOP parse ({e.reason}: {e.detail}) in {parse!r}") from None
    offsets = align_words(utterance, tree.words)
    if offsets is None:
      raise DataError(f"{path}:{line}: the parse's words do not spell the utterance {utterance!r}")
    labels |= tree.labels()
    examples.append(Example(uid=f"{uid_prefix}/{len(examples)}", domain=domain, text=utterance,
                            intents=tree.intents(), spans=top_spans(tree, utterance, offsets), parse=parse))
  return tuple(examples), labels


def label_description(label: str) -> str:
  """'IN:GET_WEATHER' -> 'get weather': the description that seeds the label's prompt (docs/design.md)."""
  return label.split(":", 1)[1].replace("_", " ").lower()


def ontology_from_labels(domain: str, labels: set[str]) -> Ontology:
  """Intents (sorted) then slots (sorted), each described by its name."""
  intents = sorted(l for l in labels if l.startswith("IN:"))
  slots = sorted(l for l in labels if l.startswith("SL:"))
  return Ontology(domain=domain, task="semantic_parse", attributes=tuple(
      [Attribute(l, "intent", label_description(l)) for l in intents]
      + [Attribute(l, "slot", label_description(l)) for l in slots]))


def read_topv2(data_dir: str | os.PathLike, domain: str) -> DomainData:
  """All splits of one TOPv2 domain: train, validation (`*_eval.tsv`), test, and for reminder/weather
  `fewshot_train` / `fewshot_validation` (the shipped 25-SPIS low-resource files; their test set is the
  full test split). The ontology holds every intent and slot label of train + eval + test.
  """
  if domain not in DOMAINS:
    raise DataError(f"unknown TOPv2 domain {domain!r}; expected one of {', '.join(DOMAINS)}")
  root = pathlib.Path(data_dir) / "topv2"
  name = f"topv2_{domain}"
  splits: dict[str, tuple[Example, ...]] = {}
  labels: set[str] = set()
  for split, pattern in _SPLIT_FILES.items():
    splits[split], seen = read_topv2_file(root / pattern.format(domain=domain), domain,
                                          uid_prefix=f"{name}/{split}")
    labels |= seen
  if domain in LOW_RESOURCE_DOMAINS:
    for split, pattern in _FEWSHOT_FILES.items():
      path = root / pattern.format(domain=domain, spis=FEWSHOT_SPIS)
      splits[split], seen = read_topv2_file(path, domain, uid_prefix=f"{name}/{split}")
      if seen - labels:
        raise DataError(f"{path}: labels {sorted(seen - labels)} are absent from the main splits")
  return DomainData(name=name, ontology=ontology_from_labels(domain, labels), splits=splits)
