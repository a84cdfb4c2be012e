"""CrossNER reader (Liu et al. 2021): named entities in five specialised domains plus CoNLL-2003.

Files (`<data_dir>/crossner/ner_data/{domain}/{train,dev,test}.txt`): CoNLL style, one `token<TAB>tag` per
line, a blank line ends a sentence; tags are `O`, `B-<type>`, `I-<type>` (strict BIO: an `I-` must continue
an entity of the same type).

Each sentence becomes an `Example` whose text is its tokens joined by single spaces and whose spans are
the entities as character offsets into that text. The ontology holds every entity type of the domain's
three files, sorted; each type is described as "<domain> <readable type>" (e.g. "politics political
party"), which seeds its soft prompt (docs/design.md, "Model input").
"""

from __future__ import annotations

import os
import pathlib

from msp_jax.data.schema import Attribute, DomainData, Example, Ontology, Span
from msp_jax.errors import DataError

DOMAINS = ("politics", "science", "music", "literature", "ai", "conll2003")
_SPLIT_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}

# Compound type names -> words (the authors rename the same types for their prompts).
_READABLE_TYPES = {
    "politicalparty": "political party",
    "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument",
    "musicgenre": "music genre",
    "literarygenre": "literary genre",
    "chemicalcompound": "chemical compound",
    "chemicalelement": "chemical element",
    "astronomicalobject": "astronomical object",
    "academicjournal": "academic journal",
    "programlang": "programming language",
    "misc": "miscellaneous",
}
# The authors call CoNLL-2003 the "general" domain.
_DOMAIN_WORDS = {"conll2003": "general"}


def describe_type(domain: str, entity_type: str) -> str:
  """'politics', 'politicalparty' -> 'politics political party'."""
  return f"{_DOMAIN_WORDS.get(domain, domain)} {_READABLE_TYPES.get(entity_type, entity_type)}"


def read_bio_file(path: str | os.PathLike, domain: str, *, uid_prefix: str) -> tuple[Example, ...]:
  """One CoNLL/BIO file -> sentences. `DataError` names the file, the line and the reason."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: CrossNER file not found")
  try:
    lines = path.read_text(encoding="utf-8").split("\n")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  examples: list[Example] = []
  tokens: list[str] = []
  spans: list[tuple[int, int, str]] = []   # token ranges [start, end) and type
  current: str | None = None               # type of the entity the previous token was in

  def flush():
    if not tokens:
      return
    starts, pos = [], 0
    for tok in tokens:
      starts.append(pos)
      pos += len(tok) + 1
    text = " ".join(tokens)
    entities = tuple(Span(starts[a], starts[b - 1] + len(tokens[b - 1]), label,
                          text[starts[a]:starts[b - 1] + len(tokens[b - 1])]) for a, b, label in spans)
    examples.append(Example(uid=f"{uid_prefix}/{len(examples)}", domain=domain, text=text, spans=entities))
    tokens.clear()
    spans.clear()

  for line_no, raw in enumerate(lines, start=1):
    line = raw.rstrip("\r")
    if not line.strip():
      flush()
      current = None
      continue
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0] or fields[0] != fields[0].strip() or not fields[1]:
      raise DataError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
    token, tag = fields
    if tag == "O":
      current = None
    elif tag.startswith("B-") and len(tag) > 2:
      current = tag[2:]
      spans.append((len(tokens), len(tokens) + 1, current))
    elif tag.startswith("I-") and len(tag) > 2:
      if current != tag[2:]:
        before = "the sentence start or O" if current is None else f"a {current} entity"
        raise DataError(f"{path}:{line_no}: tag {tag} follows {before}; an I- tag must continue a "
                        f"B-{tag[2:]} entity (BIO)")
      a, _, label = spans[-1]
      spans[-1] = (a, len(tokens) + 1, label)
    else:
      raise DataError(f"{path}:{line_no}: tag {tag!r} is not O, B-<type> or I-<type>")
    tokens.append(token)
  flush()
  if not examples:
    raise DataError(f"{path}: empty file (no sentences)")
  return tuple(examples)


def read_crossner(data_dir: str | os.PathLike, domain: str) -> DomainData:
  """All splits of one CrossNER domain: train, validation (`dev.txt`), test."""
  if domain not in DOMAINS:
    raise DataError(f"unknown CrossNER domain {domain!r}; expected one of {', '.join(DOMAINS)}")
  folder = pathlib.Path(data_dir) / "crossner" / "ner_data" / domain
  name = f"crossner_{domain}"
  splits = {split: read_bio_file(folder / file, domain, uid_prefix=f"{name}/{split}")
            for split, file in _SPLIT_FILES.items()}
  types = sorted({s.label for examples in splits.values() for e in examples for s in e.spans})
  ontology = Ontology(domain=domain, task="ner",
                      attributes=tuple(Attribute(t, "entity", describe_type(domain, t)) for t in types))
  return DomainData(name=name, ontology=ontology, splits=splits)
