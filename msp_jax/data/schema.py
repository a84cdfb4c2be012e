"""One example schema for every task: NLU++ (multi-label intents + slots), CrossNER (entities), TOPv2 (parses).

An `Example` carries its text, the *attributes* MSP conditions on (the label values: intents, slot types,
entity types, TOPv2 intents/slots), and its full structured labels (spans and, for TOPv2, the parse), so a
generated example can be parsed back into labelled data and checked.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal, Sequence

import numpy as np

from msp_jax.errors import ConfigError

AttributeKind = Literal["intent", "slot", "entity"]
TaskKind = Literal["multi_intent", "ner", "semantic_parse"]


@dataclasses.dataclass(frozen=True)
class Span:
  """A labelled character span of `Example.text`: text[start:end] == self.text."""

  start: int
  end: int
  label: str  # slot or entity type (TOPv2: the slot label, e.g. 'SL:DATE_TIME')
  text: str


@dataclasses.dataclass(frozen=True)
class Example:
  """One labelled utterance/sentence of a domain."""

  uid: str                       # stable id, e.g. 'nlupp_hotels/fold3/17'
  domain: str                    # e.g. 'hotels', 'politics', 'weather'
  text: str
  intents: tuple[str, ...] = ()  # NLU++ intents (multi-label); TOPv2 intents (all IN: labels, nesting order)
  spans: tuple[Span, ...] = ()   # NLU++ slot spans; CrossNER entities; TOPv2 slot spans (outermost text)
  parse: str | None = None       # TOPv2 bracketed parse; None elsewhere

  @property
  def attributes(self) -> tuple[str, ...]:
    """The attribute values MSP conditions on: sorted unique intents and span labels."""
    return tuple(sorted(set(self.intents) | {s.label for s in self.spans}))


@dataclasses.dataclass(frozen=True)
class Attribute:
  """One attribute value of an ontology. `description` seeds the soft prompt's initialisation."""

  name: str
  kind: AttributeKind
  description: str


_KNOWN_SHOWN = 20  # attribute names an unknown-name error lists (NLU++ banking alone has 61)


@dataclasses.dataclass(frozen=True)
class Ontology:
  """The attributes of a domain, in a fixed order (the row order of the attribute prompt table)."""

  domain: str
  task: TaskKind
  attributes: tuple[Attribute, ...]

  def __post_init__(self):
    names = [a.name for a in self.attributes]
    if len(set(names)) != len(names):
      dupes = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"ontology {self.domain!r}: duplicate attribute names {dupes}")

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(a.name for a in self.attributes)

  def index(self, name: str, where: str | None = None) -> int:
    """Row of attribute `name` in the attribute prompt table.

    Every place that turns a user-given attribute name into a row asks here, so an unknown name always gets
    the same error: `where` says where the name came from (e.g. "combinations[3]", "seed example 'x'"), and
    the message lists the domain's attributes and suggests the closest ones when the name looks like a typo.

    Raises:
      ConfigError: `name` is not an attribute of this domain.
    """
    names = self.names
    try:
      return names.index(name)
    except ValueError:
      pass
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(names[:_KNOWN_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _KNOWN_SHOWN else "")
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}attribute {name!r} is not in the ontology of domain {self.domain!r} "
                      f"(known: {shown}){hint}")

  def __contains__(self, name: str) -> bool:
    return name in self.names


def attribute_frequency(examples: Sequence[Example], ontology: Ontology) -> np.ndarray:
  """[n_attributes] float64: the fraction of `examples` carrying each attribute (ontology row order).

  The seed frequency both generation (rebalancing towards rare attributes) and denoising (the
  over-representation term) use; an empty example set gives all zeros.
  """
  counts = np.zeros(len(ontology.attributes), np.float64)
  for example in examples:
    for name in example.attributes:
      counts[ontology.index(name, where=f"example {example.uid!r}")] += 1
  return counts / max(len(examples), 1)


@dataclasses.dataclass(frozen=True)
class DomainData:
  """All splits of one domain: split name ('train', 'validation', 'test', few-shot ones) -> examples."""

  name: str                 # task name, e.g. 'nlupp_hotels', 'crossner_ai', 'topv2_weather', or a custom name
  ontology: Ontology
  splits: dict[str, tuple[Example, ...]]
