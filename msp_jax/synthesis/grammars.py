"""Request grammars: the outputs that parse with exactly a request's attributes, as Lark grammars for
llguidance, and the shortest way to finish a prefix of one (what a forced closing writes).

A request's attributes become a grammar over the serialisation format (`msp_jax.data.serialization`):

  multi_intent  text with `[span | slot]` spans whose slots are the request's, each requested slot used at
                least once, then `|| intents: a, b` with exactly the requested intents (in the request's order).
  ner           the same spans (entity types), no intents section.
  semantic_parse  a TOP parse `[IN:X word [SL:Y word ] ... ]` rooted at one requested intent; the slots directly
                under the root are exactly the requested slots, and every requested intent appears (the others
                nest inside a root slot: `[SL:Y [IN:Z ... ] ]`), so the parsed intents and slots are the request's.

Text is any character but the ones the format reserves (`[ ] | \\`, newlines and control characters), so the
outputs need no escapes.

`RequestGrammar.closing_text(prefix)` is the shortest completion of an allowed prefix into a full example
(close the open span or bracket, add the missing labels with a one-word filler, the intents section); the
constraint (`constraints.GrammarConstraint`) forces it when the token budget runs out.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Sequence

from msp_jax.data.schema import Ontology, TaskKind
from msp_jax.errors import ConfigError

FILLER = "it"  # the span text / word a forced closing writes for a label the model did not get to
# Characters a text may hold: not the bracket format's specials, not newlines (one example per line), no
# control characters (tab is fine).
_TEXT_CHAR = r"[^\[\]|\\\x00-\x08\x0a-\x1f\x7f]"
_TEXT_START = r"[^\s\[\]|\\\x00-\x08\x0a-\x1f\x7f]"
_WORD = r"[^\s\[\]\x00-\x1f\x7f]+"
_TOP_LABEL = re.compile(r"(IN|SL):[^\s\[\]]+")
_TOP_TOKEN = re.compile(r"\[[^\s\[\]]*|\]|[^\s\[\]]+")  # the parser's own TOP tokenisation


def _literal(text: str) -> str:
  """A Lark string literal."""
  return json.dumps(text, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class RequestGrammar:
  """The grammar of one request and what a forced closing needs.

  intents / span_labels: the requested intents and span (slot, entity) labels, in the request's order.
  """

  task: TaskKind
  intents: tuple[str, ...]
  span_labels: tuple[str, ...]
  lark: str

  @property
  def tail(self) -> str:
    """multi_intent: the intents section exactly as the grammar writes it (after the text)."""
    return "|| intents:" + ("" if not self.intents else " " + ", ".join(self.intents))

  def closing_text(self, prefix: str) -> str:
    """The text that completes `prefix` (a prefix this grammar allows) into a full example, before EOS."""
    if self.task == "semantic_parse":
      return _top_closing(prefix, self.intents, self.span_labels)
    return _bracket_closing(prefix, self.span_labels, self.tail if self.task == "multi_intent" else None)

  def spans_to_open(self, prefix: str) -> int:
    """Bracket formats: how many requested labels still need a span, when `prefix` is in plain text (0 inside
    a span, in the intents section, and for TOP)."""
    if self.task == "semantic_parse":
      return 0
    state = _bracket_state(prefix)
    if state.in_span or state.tail_start >= 0:
      return 0
    return sum(1 for label in self.span_labels if label not in state.used)

  def in_label(self, prefix: str) -> bool:
    """Whether `prefix` ends inside a label (or the intents section): where the next token picks which label,
    and so how long the closing is."""
    if self.task == "semantic_parse":
      return bool(prefix) and not prefix[-1].isspace() and prefix.rfind("[") > max(prefix.rfind(" "),
                                                                                   prefix.rfind("]"))
    last = max(prefix.rfind("["), prefix.rfind("]"), prefix.rfind("|"))
    return last >= 0 and prefix[last] == "|"


def _check_label(label: str, task: TaskKind, where: str) -> None:
  if task == "semantic_parse":
    if not _TOP_LABEL.fullmatch(label):
      raise ConfigError(f"{where}: TOP label {label!r} cannot be written in a parse (expected IN:<NAME> or "
                        "SL:<NAME> without spaces or brackets)")
    return
  reserved = "[]|\\,\n\r" if task == "multi_intent" else "[]|\\\n\r"
  if not label or label != label.strip() or any(c in reserved for c in label):
    raise ConfigError(f"{where}: label {label!r} cannot be written in the {task} format (no surrounding spaces, "
                      f"none of {reserved!r})")


def request_grammar(attributes: Sequence[str], ontology: Ontology, where: str = "request") -> RequestGrammar:
  """The grammar of the outputs that parse with exactly `attributes`.

  Raises ConfigError (naming `where`) for a request the format cannot express: an attribute absent from the
  ontology, an empty request, a TOP request without an intent, or several TOP intents with no slot to nest in.
  """
  task = ontology.task
  if not attributes:
    raise ConfigError(f"{where}: an empty attribute set cannot be generated (a request needs at least one "
                      "attribute)")
  kinds = {a.name: a.kind for a in ontology.attributes}
  for name in attributes:
    if name not in kinds:
      raise ConfigError(f"{where}: attribute {name!r} is not in the ontology of domain {ontology.domain!r}")
    _check_label(name, task, where)
  ordered = tuple(dict.fromkeys(attributes))
  if task == "semantic_parse":
    intents = tuple(a for a in ordered if a.startswith("IN:"))
    slots = tuple(a for a in ordered if a.startswith("SL:"))
    if not intents:
      raise ConfigError(f"{where}: attributes {list(ordered)} hold no intent; a TOP parse needs a root intent")
    if len(intents) > 1 and not slots:
      raise ConfigError(f"{where}: attributes {list(ordered)} hold {len(intents)} intents and no slot; a TOP "
                        "parse nests a second intent inside a slot of the root")
    return RequestGrammar(task, intents, slots, _top_lark(intents, slots))
  intents = tuple(a for a in ordered if kinds[a] == "intent")
  labels = tuple(a for a in ordered if kinds[a] != "intent")
  if task == "ner" and intents:
    raise ConfigError(f"{where}: NER requests carry entity types only, not intents {list(intents)}")
  if task not in ("multi_intent", "ner"):
    raise ConfigError(f"{where}: unknown task kind {task!r}; expected multi_intent, ner or semantic_parse")
  grammar = RequestGrammar(task, intents, labels, "")
  return dataclasses.replace(grammar, lark=_bracket_lark(labels, grammar.tail if task == "multi_intent" else None))


def _bracket_lark(labels: Sequence[str], tail: str | None) -> str:
  """Text with `[span | label]` spans, each label used at least once (a bit per label), then `tail`.

  The space before a span's bar and before `||` belongs to the text before it: llguidance's lexemes are greedy,
  and the parser drops that one space either way.
  """
  end = "" if tail is None else " " + _literal(tail)
  if not labels:
    return f"start: NONEMPTY_TEXT{end}\nNONEMPTY_TEXT: /{_TEXT_CHAR}*{_TEXT_START}{_TEXT_CHAR}*/\n"
  spans = [f'"[" SPAN_TEXT {_literal("| " + label + "]")} TEXT? spans::set_bit({i})' for i, label in enumerate(labels)]
  return (f"start: TEXT? spans::0x0{end}\n"
          f"spans::_ : \"\" %if is_ones([0:{len(labels)}])\n  | " + "\n  | ".join(spans) + "\n"
          f"TEXT: /{_TEXT_CHAR}+/\n"
          f"SPAN_TEXT: /{_TEXT_START}{_TEXT_CHAR}*/\n")


def _top_lark(intents: Sequence[str], slots: Sequence[str]) -> str:
  """`[IN:root item+ ]` with item = word | root slot; one bit per requested intent and slot.

  A root slot holds words, or exactly one nested intent (whose items are words and slots); the bits record
  which intents appear anywhere and which slots appear directly under the root (what the parser calls the
  example's slots). Every bracket label is its own lexeme: llguidance's lexer is greedy, so a lexeme that
  ran on past another's end (`" [SL:A [IN:B"` past `" [SL:A"`) could not give the bytes back.
  """
  bit = {name: i for i, name in enumerate(list(intents) + list(slots))}
  items = ['" " WORD rest::_']
  for slot in slots:
    items.append(f'{_literal(" [" + slot)} slot_words " ]" rest::bit_or({1 << bit[slot]:#x})')
    for intent in intents:
      items.append(f'{_literal(" [" + slot)} {_literal(" [" + intent)} nested_items " ]" " ]" '
                   f"rest::bit_or({(1 << bit[slot]) | (1 << bit[intent]):#x})")
  roots = [f"{_literal('[' + intent)} first::{1 << bit[intent]:#x}" for intent in intents]
  nested_slots = [f'{_literal(" [" + slot)} slot_words " ]"' for slot in slots]
  lines = ["start: " + " | ".join(roots),
           "first::_ : " + "\n  | ".join(items),
           f'rest::_ : " ]" %if is_ones([0:{len(bit)}])\n  | ' + "\n  | ".join(items),
           'slot_words: (" " WORD)+',
           "nested_items: (" + " | ".join(['" " WORD'] + nested_slots) + ")+",
           f"WORD: /{_WORD}/"]
  return "\n".join(lines) + "\n"


def _pick(candidates: Sequence[str], missing: Sequence[str]) -> str:
  """A missing label when one fits (the closing then covers it for free), else the first candidate."""
  for label in candidates:
    if label in missing:
      return label
  return candidates[0]


@dataclasses.dataclass
class _BracketState:
  """Where a bracket-format prefix stands: an open span (its start, its bar), the labels of its closed spans,
  and where the intents section began (-1: not yet)."""

  in_span: bool = False
  span_start: int = 0
  bar: int = -1
  used: set = dataclasses.field(default_factory=set)
  tail_start: int = -1


def _bracket_state(prefix: str) -> _BracketState:
  state = _BracketState()
  for i, c in enumerate(prefix):
    if not state.in_span and c == "[":
      state.in_span, state.span_start, state.bar = True, i, -1
    elif not state.in_span and c == "|":  # only the intents section starts with a bar outside a span
      state.tail_start = i
      break
    elif state.in_span and c == "|":
      state.bar = i
    elif state.in_span and c == "]":
      state.used.add(prefix[state.bar + 1:i].strip())
      state.in_span = False
  return state


def _bracket_closing(prefix: str, labels: Sequence[str], tail: str | None) -> str:
  state = _bracket_state(prefix)
  if state.tail_start >= 0:
    return tail[len(prefix) - state.tail_start:] if tail is not None else ""
  in_span, span_start, bar, used = state.in_span, state.span_start, state.bar, state.used
  closing = []
  missing = [label for label in labels if label not in used]
  if in_span:
    if bar < 0:
      text = prefix[span_start + 1:]
      label = _pick(labels, missing)
      closing.append(("" if text else FILLER) + " | " + label + "]")
    else:
      written = prefix[bar:]
      fits = [label for label in labels if ("| " + label + "]").startswith(written)]
      label = _pick(fits, missing)
      closing.append(("| " + label + "]")[len(written):])
    missing = [m for m in missing if m != label]
  closing += [f" [{FILLER} | {label}]" for label in missing]
  if not labels and not prefix.strip():
    closing.append(FILLER)
  if tail is not None:
    closing.append(" " + tail)
  return "".join(closing)


def _top_closing(prefix: str, intents: Sequence[str], slots: Sequence[str]) -> str:
  """Closes every open bracket of a TOP prefix (the grammar's nesting: root intent > slot > intent > slot)."""
  tokens = _TOP_TOKEN.findall(prefix)
  partial = None  # an opening bracket whose label may still grow
  if tokens and tokens[-1].startswith("[") and not prefix[-1].isspace():
    partial = tokens.pop()
  elif not prefix.strip():
    partial = ""
  stack: list[list[Any]] = []  # [label, items]
  used_intents: set[str] = set()
  used_slots: set[str] = set()

  def push(label: str) -> None:
    if label.startswith("IN:"):
      used_intents.add(label)
    elif len(stack) == 1:
      used_slots.add(label)
    stack.append([label, 0])

  for token in tokens:
    if token.startswith("["):
      push(token[1:])
    elif token == "]":
      stack.pop()
      if stack:
        stack[-1][1] += 1
    else:
      stack[-1][1] += 1
  closing = []
  if partial is not None:
    depth_labels = intents if len(stack) % 2 == 0 else slots
    missing = [x for x in depth_labels if x not in (used_intents if len(stack) % 2 == 0 else used_slots)]
    fits = [x for x in depth_labels if ("[" + x).startswith(partial or "[")]
    label = _pick(fits, missing)
    closing.append(("[" + label)[len(partial):])
    push(label)
  while stack:
    label, items = stack[-1]
    if len(stack) == 1:  # the root: add what is missing before closing it
      if not items:
        closing.append(" " + FILLER)
      missing_slots = [s for s in slots if s not in used_slots]
      for intent in (i for i in intents if i not in used_intents):
        slot = missing_slots.pop(0) if missing_slots else slots[0]
        used_slots.add(slot)
        closing.append(f" [{slot} [{intent} {FILLER} ] ]")
      closing += [f" [{slot} {FILLER} ]" for slot in missing_slots]
    elif not items:
      closing.append(" " + FILLER)
    closing.append(" ]")
    stack.pop()
    if stack:
      stack[-1][1] += 1
  text = "".join(closing)
  return text[1:] if prefix[-1:].isspace() and text.startswith(" ") else text
