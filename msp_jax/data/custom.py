"""Reader for a user's own domain: JSONL or CSV files plus an optional ontology JSON.

JSONL, one object per line (blank lines are ignored):

  {"text": "book a double room for friday",
   "intents": ["book_room"],                                   # optional; multi_intent
   "spans": [{"start": 7, "end": 18, "label": "room_type"}],   # optional; "entities" is an alias (ner)
   "parse": "[IN:BOOK ... ]"}                                   # optional; TOP format (semantic_parse)

  Span offsets are characters of `text`, end exclusive; a span may also give its "text", which must equal
  `text[start:end]`. Spans may nest but not cross. With a "parse", intents and spans come from the parse
  (its words must spell `text`; `text` may be omitted and is then the words joined by spaces).

CSV, with a header row holding `text` and optionally `intents`, `spans` (other columns are ignored):

  text,intents,spans
  "book a double room for friday",book_room,7:18:room_type
  "double room, friday please",book_room;change_booking,0:11:room_type;13:19:date

  `intents` is labels separated by `;`; `spans` is `start:end:label` items separated by `;`.

Ontology JSON (optional): `{"task": "multi_intent"|"ner"|"semantic_parse", "domain"?: ...,
"attributes": [{"name", "kind": "intent"|"slot"|"entity", "description"}]}`. Every label in the data must
be in it. Without one, the ontology is inferred: intents (sorted) then span labels (sorted; kind `slot`,
or `entity` for ner), each described by its name with `_` as spaces. The task is, in order: the `task`
argument, the ontology's, else `semantic_parse` if any row has a parse, `multi_intent` if any has intents,
otherwise `ner`.

Label names may not contain `[`, `]`, `|`, `,` or `\\` (the serialised format reserves them) and may not
start or end with whitespace.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Any, Iterable

from msp_jax import files
from msp_jax.data import topv2
from msp_jax.data.schema import Attribute, DomainData, Example, Ontology, Span, TaskKind
from msp_jax.data.serialization import check_spans, span_sort_key
from msp_jax.errors import DataError

TASK_KINDS = ("multi_intent", "ner", "semantic_parse")
ATTRIBUTE_KINDS = ("intent", "slot", "entity")
_RESERVED = set("[]|,\\")


def _check_name(name: Any, where: str) -> str:
  if (not isinstance(name, str) or not name or name != name.strip()
      or any(c in _RESERVED for c in name)):
    raise DataError(f"{where}: label {name!r} must be a non-empty string without surrounding spaces "
                    "or any of [ ] | , \\")
  return name


def read_ontology_file(path: str | os.PathLike, domain: str) -> Ontology:
  """An ontology JSON (schema in the module docstring) -> `Ontology`; `DataError` says what is wrong."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: ontology file not found")
  try:
    raw = json.loads(files.read_text(path))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
  if not isinstance(raw, dict) or not isinstance(raw.get("attributes"), list):
    raise DataError(f"{path}: expected an object with an 'attributes' list")
  task = raw.get("task")
  if task not in TASK_KINDS:
    raise DataError(f"{path}: field 'task' is {task!r}; expected one of {', '.join(TASK_KINDS)}")
  attributes, seen = [], set()
  for i, entry in enumerate(raw["attributes"]):
    where = f"{path}: attributes[{i}]"
    if not isinstance(entry, dict):
      raise DataError(f"{where}: expected an object with name, kind, description")
    name = _check_name(entry.get("name"), where)
    kind = entry.get("kind")
    if kind not in ATTRIBUTE_KINDS:
      raise DataError(f"{where}: field 'kind' is {kind!r}; expected one of {', '.join(ATTRIBUTE_KINDS)}")
    description = entry.get("description", name.replace("_", " "))
    if not isinstance(description, str) or not description.strip():
      raise DataError(f"{where}: field 'description' must be a non-empty string")
    if name in seen:
      raise DataError(f"{where}: duplicate attribute name {name!r}")
    seen.add(name)
    attributes.append(Attribute(name, kind, description))
  if not attributes:
    raise DataError(f"{path}: 'attributes' is empty")
  return Ontology(domain=str(raw.get("domain") or domain), task=task, attributes=tuple(attributes))


def _int(value: Any, where: str, field: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise DataError(f"{where}: span field {field!r} must be an integer, got {value!r}")
  return value


def _row_to_example(row: dict[str, Any], where: str, uid: str, domain: str) -> Example:
  """One decoded row -> Example (labels not yet checked against an ontology)."""
  text = row.get("text")
  parse = row.get("parse")
  if parse is not None:
    if not isinstance(parse, str):
      raise DataError(f"{where}: field 'parse' must be a string, got {parse!r}")
    if text is not None and (not isinstance(text, str) or not text.strip()):
      raise DataError(f"{where}: field 'text' must be a non-empty string, got {text!r}")
    try:
      return topv2.example_from_parse(parse, uid=uid, domain=domain, text=text)
    except topv2.TopParseError as e:
      raise DataError(f"{where}: bad TOP parse ({e.reason}: {e.detail})") from None
  if "text" not in row:
    raise DataError(f"{where}: missing field 'text'")
  if not isinstance(text, str) or not text.strip():
    raise DataError(f"{where}: field 'text' must be a non-empty string, got {text!r}")
  intents = row.get("intents", [])
  if not isinstance(intents, list):
    raise DataError(f"{where}: field 'intents' must be a list of labels, got {intents!r}")
  for intent in intents:
    _check_name(intent, where)
  if "spans" in row and "entities" in row:
    raise DataError(f"{where}: give 'spans' or 'entities', not both")
  raw_spans = row.get("spans", row.get("entities", []))
  if not isinstance(raw_spans, list):
    raise DataError(f"{where}: field 'spans' must be a list, got {raw_spans!r}")
  spans = []
  for s in raw_spans:
    if not isinstance(s, dict) or not {"start", "end", "label"} <= s.keys():
      raise DataError(f"{where}: each span needs 'start', 'end' and 'label', got {s!r}")
    start, end = _int(s["start"], where, "start"), _int(s["end"], where, "end")
    label = _check_name(s["label"], where)
    span_text = s.get("text", text[start:end] if 0 <= start <= end <= len(text) else "")
    if not isinstance(span_text, str):
      raise DataError(f"{where}: span field 'text' must be a string, got {span_text!r}")
    spans.append(Span(start, end, label, span_text))
  problem = check_spans(text, spans)
  if problem:
    raise DataError(f"{where}: {problem}")
  return Example(uid=uid, domain=domain, text=text, intents=tuple(dict.fromkeys(intents)),
                 spans=tuple(sorted(spans, key=span_sort_key)))


def _csv_rows(path: pathlib.Path, lines: Iterable[str]):
  """Yields (line number, row dict in the JSONL schema) from CSV lines (with their line ends); DataError on a
  bad cell."""
  reader = csv.reader(lines)
  try:
    header = next(reader)
  except StopIteration:
    return
  except csv.Error as e:
    raise DataError(f"{path}:1: unreadable CSV header ({e})") from None
  header = [h.strip() for h in header]
  if "text" not in header:
    raise DataError(f"{path}:1: the CSV header {header!r} has no 'text' column")
  while True:
    try:
      cells = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      yield reader.line_num, DataError(f"{path}:{reader.line_num}: unreadable CSV row ({e})")
      continue
    line = reader.line_num
    if not cells or all(not c.strip() for c in cells):
      continue
    if len(cells) != len(header):
      yield line, DataError(f"{path}:{line}: expected {len(header)} fields ({', '.join(header)}), "
                            f"got {len(cells)}")
      continue
    cell = dict(zip(header, cells))
    row: dict[str, Any] = {"text": cell["text"]}
    if cell.get("intents", "").strip():
      row["intents"] = [i.strip() for i in cell["intents"].split(";") if i.strip()]
    spans = []
    bad = None
    for item in filter(None, (s.strip() for s in cell.get("spans", "").split(";"))):
      parts = item.split(":", 2)
      try:
        spans.append({"start": int(parts[0]), "end": int(parts[1]), "label": parts[2].strip()})
      except (ValueError, IndexError):
        bad = DataError(f"{path}:{line}: span {item!r} is not 'start:end:label'")
        break
    if bad:
      yield line, bad
      continue
    row["spans"] = spans
    yield line, row


def _rows(path: pathlib.Path):
  """Yields (line number, decoded row or the DataError that row raises) for a JSONL or CSV file."""
  if not path.is_file():
    raise DataError(f"{path}: file not found")
  lines = list(files.text_lines(path, keep_ends=True))  # split at '\n' only, a UTF-8 byte-order mark dropped
  if not any(line.strip() for _, line in lines):
    raise DataError(f"{path}: empty file (expected one example per line)")
  if path.suffix.lower() == ".csv":
    yield from _csv_rows(path, (line for _, line in lines))
    return
  for line_no, line in lines:
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      yield line_no, DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})")
      continue
    if not isinstance(row, dict):
      yield line_no, DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
      continue
    yield line_no, row


def _check_labels(example: Example, ontology: Ontology, where: str) -> None:
  kinds = {a.name: a.kind for a in ontology.attributes}
  if example.parse is not None:  # nested slots are in no span: check every label of the tree
    unknown = sorted(topv2.parse_top(example.parse).labels() - kinds.keys())
    if unknown:
      raise DataError(f"{where}: parse labels {unknown} are not in the ontology")
  for intent in example.intents:
    if kinds.get(intent) != "intent":
      raise DataError(f"{where}: intent {intent!r} is not an intent of the ontology")
  for span in example.spans:
    if kinds.get(span.label) not in ("slot", "entity"):
      raise DataError(f"{where}: span label {span.label!r} is not a slot/entity of the ontology")


def read_file(path: str | os.PathLike, *, domain: str, uid_prefix: str, ontology: Ontology | None = None,
              skip_invalid: bool = False, require_parse: bool = False) -> tuple[tuple[Example, ...], int]:
  """One JSONL/CSV file -> (examples, number of rows skipped). Without `skip_invalid` the first bad row
  raises `DataError` (file, line, reason); with it, bad rows are counted and left out. A missing or empty
  file, or one with no valid row, always raises. `require_parse` (task semantic_parse) makes a row without
  a 'parse' a bad row."""
  path = pathlib.Path(path)
  examples: list[Example] = []
  skipped = 0
  for line_no, row in _rows(path):
    where = f"{path}:{line_no}"
    try:
      if isinstance(row, DataError):
        raise row
      example = _row_to_example(row, where, f"{uid_prefix}/{len(examples)}", domain)
      if require_parse and example.parse is None:
        raise DataError(f"{where}: task semantic_parse needs a 'parse' (a TOP bracket string) in every row")
      if ontology is not None:
        _check_labels(example, ontology, where)
    except DataError:
      if not skip_invalid:
        raise
      skipped += 1
      continue
    examples.append(example)
  if not examples:
    raise DataError(f"{path}: no valid examples ({skipped} invalid row(s) skipped)")
  return tuple(examples), skipped


def infer_task(examples: list[Example], has_parse: bool) -> TaskKind:
  if has_parse:
    return "semantic_parse"
  return "multi_intent" if any(e.intents for e in examples) else "ner"


def infer_ontology(domain: str, task: TaskKind, examples: list[Example]) -> Ontology:
  """Intents (sorted) then span labels (sorted), described by their names."""
  if task == "semantic_parse":
    labels = set()
    for e in examples:
      labels |= topv2.parse_top(e.parse or "").labels()
    return topv2.ontology_from_labels(domain, labels)
  intents = sorted({i for e in examples for i in e.intents})
  span_kind = "entity" if task == "ner" else "slot"
  span_labels = sorted({s.label for e in examples for s in e.spans})
  clash = set(intents) & set(span_labels)
  if clash:
    raise DataError(f"domain {domain!r}: labels {sorted(clash)} are used both as intents and as span labels")
  return Ontology(domain=domain, task=task, attributes=tuple(
      [Attribute(n, "intent", n.replace("_", " ")) for n in intents]
      + [Attribute(n, span_kind, n.replace("_", " ")) for n in span_labels]))


def read_custom(name: str, *, train: str | os.PathLike, validation: str | os.PathLike | None = None,
                test: str | os.PathLike | None = None, ontology: str | os.PathLike | None = None,
                task: TaskKind | None = None) -> DomainData:
  """A user domain from JSONL/CSV files (schema in the module docstring); the first bad row raises DataError.

  Args:
    name: the task name (`DomainData.name`); also the examples' domain unless the ontology names one.
    train, validation, test: data files (`.csv` is read as CSV, anything else as JSONL).
    ontology: an ontology JSON file; inferred from the labels when None.
    task: `multi_intent`, `ner` or `semantic_parse`; default: the ontology's, else inferred.
  """
  data, _ = _read_custom(name, train=train, validation=validation, test=test, ontology=ontology, task=task,
                         skip_invalid=False)
  return data


def read_custom_skipping_invalid(name: str, *, train: str | os.PathLike,
                                 validation: str | os.PathLike | None = None, test: str | os.PathLike | None = None,
                                 ontology: str | os.PathLike | None = None, task: TaskKind | None = None
                                 ) -> tuple[DomainData, int]:
  """`read_custom` that leaves bad rows out instead of raising: (the domain, number of rows skipped)."""
  return _read_custom(name, train=train, validation=validation, test=test, ontology=ontology, task=task,
                      skip_invalid=True)


def _read_custom(name, *, train, validation, test, ontology, task, skip_invalid: bool
                 ) -> tuple[DomainData, int]:
  if task is not None and task not in TASK_KINDS:
    raise DataError(f"task {task!r} is not one of {', '.join(TASK_KINDS)}")
  onto = read_ontology_file(ontology, name) if ontology is not None else None
  if onto is not None and task is not None and onto.task != task:
    raise DataError(f"{ontology}: task {onto.task!r} differs from the requested task {task!r}")
  domain = onto.domain if onto is not None else name

  def read_splits(require_parse: bool) -> tuple[dict[str, tuple[Example, ...]], int]:
    splits, skipped = {}, 0
    for split, path in (("train", train), ("validation", validation), ("test", test)):
      if path is not None:
        splits[split], n = read_file(path, domain=domain, uid_prefix=f"{name}/{split}", ontology=onto,
                                     skip_invalid=skip_invalid, require_parse=require_parse)
        skipped += n
    return splits, skipped

  known_task = task or (onto.task if onto is not None else None)
  splits, skipped = read_splits(require_parse=known_task == "semantic_parse")
  if onto is None:
    examples = [e for split in splits.values() for e in split]
    inferred = task or infer_task(examples, any(e.parse for e in examples))
    if inferred == "semantic_parse" and not all(e.parse for e in examples):
      # Some rows have a parse, so the task is semantic_parse: read again to name the rows without one.
      splits, skipped = read_splits(require_parse=True)
      examples = [e for split in splits.values() for e in split]
    onto = infer_ontology(domain, inferred, examples)
  return DomainData(name=name, ontology=onto, splits=splits), skipped
