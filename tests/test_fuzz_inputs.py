"""Fuzzing the commands that read a user's files: `msp perplexity` and `msp register` get random bytes and
random JSONL / CSV shapes. Whatever the input, the command succeeds (exit 0) or refuses it in one line
(`error: ...`, exit 2); it never ends in a traceback.

Runs in-process through `msp_jax.cli.main`, with `MSP_HOME` in a fresh temporary folder per example.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import os
import pathlib
import tempfile

T5_VOCAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "t5_vocab" / "sentencepiece.model"
os.environ.setdefault("MSP_T5_VOCAB", str(T5_VOCAB))  # read when `tasks` is imported (by `msp register`)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from msp_jax import cli  # noqa: E402

# MSP_FUZZ_EXAMPLES=400 for a longer hunt; capsys is read and reset inside every example.
SETTINGS = settings(max_examples=int(os.environ.get("MSP_FUZZ_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_names = itertools.count()

# Labels and texts from a small alphabet, so random rows are often valid (and reach the deeper checks), plus
# the characters the formats reserve or mishandle.
_TEXT = st.lists(st.sampled_from(list("ab xyz_:;,[]|\\\"'\t\r\u00e9\u2028\x00\x0b\ufeff") + ["IN:", "SL:"]),
                max_size=16).map("".join)
_LABEL = st.one_of(st.sampled_from(["book", "cancel", "room", "date", "IN:BOOK", "", " x", "a|b"]), _TEXT)
_JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True), _TEXT)
_JSON = st.recursive(_JSON_SCALAR, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8)
_SPAN = st.fixed_dictionaries({}, optional={"start": st.one_of(st.integers(-2, 30), _JSON_SCALAR),
                                            "end": st.one_of(st.integers(-2, 30), _JSON_SCALAR),
                                            "label": _LABEL, "text": st.one_of(_TEXT, _JSON_SCALAR)})
_PARSE = st.lists(st.sampled_from(["[IN:BOOK", "[SL:ROOM", "]", "a", "room", "[", "IN:", "[IN:", "[SL:"]),
                  max_size=12).map(" ".join)
_ROW = st.fixed_dictionaries({}, optional={
    "text": st.one_of(_TEXT, _JSON_SCALAR), "intents": st.one_of(st.lists(_LABEL, max_size=3), _JSON),
    "spans": st.one_of(st.lists(_SPAN, max_size=3), _JSON), "entities": st.lists(_SPAN, max_size=2),
    "parse": st.one_of(_PARSE, _JSON_SCALAR), "extra": _JSON})
_WORD = st.sampled_from(["book", "a", "double", "room", "for", "friday", "caf\u00e9", "[x]", "a|b", "x,y", "\u2028"])


@st.composite
def _valid_row(draw) -> dict:
  """A row that is valid or one mutation away from it, so the checks past the first one run too."""
  words = draw(st.lists(_WORD, min_size=1, max_size=6))
  text = " ".join(words)
  row = {"text": text, "intents": draw(st.lists(st.sampled_from(["book_room", "cancel"]), max_size=2))}
  spans = []
  for index in draw(st.sets(st.integers(0, len(words) - 1), max_size=2)):
    start = len(" ".join(words[:index])) + (1 if index else 0)
    spans.append({"start": start, "end": start + len(words[index]),
                  "label": draw(st.sampled_from(["room_type", "date"]))})
  row["spans"] = spans
  mutation = draw(st.sampled_from(["none", "none", "drop", "replace", "shift"]))
  key = draw(st.sampled_from(sorted(row)))
  if mutation == "drop":
    del row[key]
  elif mutation == "replace":
    row[key] = draw(_JSON)
  elif mutation == "shift" and spans:
    spans[0]["end"] += draw(st.integers(-3, 3))
  return row


_JSONL_LINE = st.one_of(_valid_row().map(lambda r: json.dumps(r, ensure_ascii=False)), _valid_row().map(json.dumps),
                        _ROW.map(lambda r: json.dumps(r, ensure_ascii=False)), _JSON.map(json.dumps), _TEXT)


@st.composite
def _jsonl_bytes(draw) -> bytes:
  line = draw(st.sampled_from([_valid_row().map(json.dumps), _JSONL_LINE]))  # half the files: rows only
  lines = draw(st.lists(line, min_size=0, max_size=8))
  text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
  data = text.encode("utf-8", "surrogatepass")
  if draw(st.booleans()):
    data = b"\xef\xbb\xbf" + data
  return data


_CSV_CELL = st.one_of(_TEXT, st.lists(st.tuples(st.integers(-2, 30), st.integers(-2, 30), _LABEL), max_size=2)
                      .map(lambda spans: ";".join(f"{s}:{e}:{label}" for s, e, label in spans)))


def _csv_cells(row: dict) -> list:
  spans = row.get("spans") if isinstance(row.get("spans"), list) else []
  intents = row.get("intents") if isinstance(row.get("intents"), list) else []
  return [row.get("text", ""), ";".join(map(str, intents)),
          ";".join(f"{s.get('start')}:{s.get('end')}:{s.get('label')}" for s in spans if isinstance(s, dict))]


@st.composite
def _csv_bytes(draw) -> bytes:
  if draw(st.booleans()):  # the documented columns, cells from (nearly) valid rows
    header = ["text", "intents", "spans"]
    rows = [_csv_cells(row) for row in draw(st.lists(_valid_row(), min_size=1, max_size=6))]
  else:
    header = draw(st.lists(st.sampled_from(["text", "intents", "spans", "other", "", " text"]), max_size=4))
    rows = draw(st.lists(st.lists(_CSV_CELL, min_size=0, max_size=len(header) + 1), max_size=5))
  out = io.StringIO()
  writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])))
  writer.writerow(header)
  writer.writerows(rows)
  data = out.getvalue().encode("utf-8", "surrogatepass")
  if draw(st.booleans()):
    data = b"\xef\xbb\xbf" + data
  return data


_ONTOLOGY = st.one_of(
    st.none(), st.none(), st.none(), st.binary(max_size=40),
    st.fixed_dictionaries({}, optional={
        "task": st.sampled_from(["multi_intent", "ner", "semantic_parse", "other", None]),
        "attributes": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
            "name": _LABEL, "kind": st.sampled_from(["intent", "slot", "entity", "x"]),
            "description": st.one_of(_TEXT, _JSON_SCALAR)}), max_size=4), _JSON),
        "domain": st.one_of(_TEXT, _JSON_SCALAR)}).map(lambda d: json.dumps(d).encode()))


@contextlib.contextmanager
def _msp_home():
  with tempfile.TemporaryDirectory() as home:
    old = os.environ.get("MSP_HOME")
    os.environ["MSP_HOME"] = home
    try:
      yield pathlib.Path(home)
    finally:
      if old is None:
        os.environ.pop("MSP_HOME", None)
      else:
        os.environ["MSP_HOME"] = old


def _assert_ok_or_one_line(argv: list[str], capsys) -> int:
  capsys.readouterr()
  status = cli.main(argv)  # an exception other than a user error escapes here and fails the test
  err = capsys.readouterr().err
  event(f"exit status {status}")  # --hypothesis-show-statistics: how often the input got through
  if status == 0:
    return status
  lines = err.strip().splitlines()
  assert status == 2, (status, err)
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  return status


@pytest.fixture(scope="module")
def one_backbone_load():
  """`msp perplexity` loads its backbone once for all examples (loading is not what is fuzzed here), so the
  jitted scorer compiles once per shape instead of once per example."""
  from msp_jax import backbones

  cached = functools.lru_cache(maxsize=None)(backbones.load_backbone)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(backbones, "load_backbone", lambda spec, **kwargs: cached(spec, **kwargs))
    yield


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
                      _jsonl_bytes()))
def test_perplexity_of_any_bytes_scores_or_refuses_in_one_line(data, capsys, one_backbone_load):
  with tempfile.TemporaryDirectory() as folder, _msp_home():
    path = pathlib.Path(folder) / "texts.txt"
    path.write_bytes(data)
    _assert_ok_or_one_line(["perplexity", "--backbone", "random:llama-tiny", "--input", str(path)], capsys)


@SETTINGS
@given(train=st.one_of(_jsonl_bytes(), st.binary(max_size=200)), validation=st.one_of(st.none(), _jsonl_bytes()),
       ontology=_ONTOLOGY, task=st.sampled_from([None, "multi_intent", "ner", "semantic_parse"]))
def test_register_of_any_jsonl_registers_or_refuses_in_one_line(train, validation, ontology, task, capsys):
  _register(".jsonl", train, validation, ontology, task, capsys)


@SETTINGS
@given(train=st.one_of(_csv_bytes(), st.binary(max_size=200)), validation=st.one_of(st.none(), _csv_bytes()),
       ontology=_ONTOLOGY, task=st.sampled_from([None, "multi_intent", "ner"]))
def test_register_of_any_csv_registers_or_refuses_in_one_line(train, validation, ontology, task, capsys):
  _register(".csv", train, validation, ontology, task, capsys)


def _register(suffix: str, train: bytes, validation: bytes | None, ontology: bytes | None, task: str | None,
              capsys) -> None:
  with tempfile.TemporaryDirectory() as folder, _msp_home():
    folder = pathlib.Path(folder)
    argv = ["register", f"fuzz_{next(_names)}", "--train", str(folder / f"train{suffix}")]
    (folder / f"train{suffix}").write_bytes(train)
    if validation is not None:
      (folder / f"validation{suffix}").write_bytes(validation)
      argv += ["--validation", str(folder / f"validation{suffix}")]
    if ontology is not None:
      (folder / "ontology.json").write_bytes(ontology)
      argv += ["--ontology", str(folder / "ontology.json")]
    if task is not None:
      argv += ["--task", task]
    _assert_ok_or_one_line(argv, capsys)
