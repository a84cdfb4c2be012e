"""Readers: counts against the data README, label inventories, and errors that name file, line and reason."""

from __future__ import annotations

import json
import pathlib
import re

import hypothesis
import hypothesis.strategies as st
import pytest

from msp_jax.data import catalog, crossner, custom, nlupp, topv2
from msp_jax.data.schema import DomainData
from msp_jax.errors import ConfigError, DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
FRONT_DESK = REPO / "msp_jax" / "examples" / "front_desk"

# Figures from ../shared/data/README.md.
NLUPP = {  # domain: (train, validation, intents, slots, general intents, general slots)
    "banking": (1862, 209, 48, 13, 25, 10),
    "hotels": (914, 95, 40, 14, 25, 10),
}
CROSSNER = {  # domain: (sentences train/dev/test, entity mentions train/dev/test)
    "politics": ((200, 541, 651), (1304, 3482, 4209)),
    "science": ((200, 450, 543), (1075, 2538, 3089)),
    "music": ((100, 380, 465), (648, 2679, 3336)),
    "literature": ((100, 400, 416), (541, 2130, 2266)),
    "ai": ((100, 350, 431), (532, 1549, 1809)),
    "conll2003": ((14041, 3250, 3453), (23429, 5938, 5628)),
}
CROSSNER_TYPES = {
    "politics": "country election event location misc organisation person politicalparty politician",
    "science": "academicjournal astronomicalobject award chemicalcompound chemicalelement country discipline "
               "enzyme event location misc organisation person protein scientist theory university",
    "music": "album award band country event location misc musicalartist musicalinstrument musicgenre "
             "organisation person song",
    "literature": "award book country event literarygenre location magazine misc organisation person poem writer",
    "ai": "algorithm conference country field location metrics misc organisation person product programlang "
          "researcher task university",
    "conll2003": "location misc organisation person",
}
TOPV2 = {  # domain: (train, eval, test, intents, slots, root intents in train, train rows with > 1 IN:)
    "alarm": (20430, 2935, 7123, 8, 9, 7, 3509),
    "event": (9170, 1336, 2654, 11, 17, 5, 1853),
    "messaging": (10018, 1536, 3048, 12, 27, 7, 1642),
    "music": (11563, 1573, 4184, 15, 9, 14, 0),
    "navigation": (20998, 2971, 6075, 17, 33, 11, 9100),
    "reminder": (17840, 2526, 5767, 19, 32, 10, 3833),
    "timer": (11524, 1616, 4252, 11, 5, 10, 360),
    "weather": (23054, 2667, 5682, 7, 11, 4, 22),
}
TOPV2_LOW_RESOURCE = {"reminder": (493, 337, 18, 30), "weather": (176, 147, 7, 11)}  # rows, train intents/slots


@pytest.fixture(scope="module")
def topv2_data(data_dir) -> dict[str, DomainData]:
  return {d: topv2.read_topv2(data_dir, d) for d in topv2.DOMAINS}


def _error_names(excinfo, path, line: int | None = None) -> None:
  message = str(excinfo.value)
  assert str(path) in message
  if line is not None:
    assert f":{line}:" in message


# ---------------------------------------------------------------------------------------------------------
# NLU++


@pytest.mark.parametrize("domain", sorted(NLUPP))
def test_nlupp_split_sizes_and_label_inventory(data_dir, domain):
  train, validation, intents, slots, general_intents, general_slots = NLUPP[domain]
  data = nlupp.read_nlupp(data_dir, domain)
  assert {k: len(v) for k, v in data.splits.items()} == {"train": train, "validation": validation,
                                                         "test": validation}
  kinds = [a.kind for a in data.ontology.attributes]
  assert (kinds.count("intent"), kinds.count("slot")) == (intents, slots)
  raw = json.loads((data_dir / "nlupp/data/ontology.json").read_text())
  general = {n for sec in ("intents", "slots") for n, e in raw[sec].items() if e["domain"] == ["general"]}
  assert sum(a.name in general for a in data.ontology.attributes if a.kind == "intent") == general_intents
  assert sum(a.name in general for a in data.ontology.attributes if a.kind == "slot") == general_slots


def test_nlupp_every_label_used_in_data_is_declared_and_every_declared_label_is_used(data_dir):
  for domain in NLUPP:
    data = nlupp.read_nlupp(data_dir, domain)
    used = {a for split in ("train", "validation") for e in data.splits[split] for a in e.attributes}
    assert used == set(data.ontology.names)


def test_nlupp_test_split_is_the_validation_split(data_dir):
  data = nlupp.read_nlupp(data_dir, "hotels")
  assert data.splits["test"] == data.splits["validation"]
  assert {e.uid.split("/")[1] for e in data.splits["validation"]} == {"fold0", "fold1"}
  assert {e.uid.split("/")[1] for e in data.splits["train"]} == {f"fold{i}" for i in range(2, 20)}


def test_nlupp_example_fields_follow_the_file(data_dir):
  first = nlupp.read_nlupp(data_dir, "hotels").splits["validation"][0]
  raw = json.loads((data_dir / "nlupp/data/hotels/fold0.json").read_text())[0]
  assert first.text == raw["text"]
  assert set(first.intents) == set(raw.get("intents", []))
  assert {(s.label, s.start, s.end) for s in first.spans} == {
      (k, *v["span"]) for k, v in raw.get("slots", {}).items()}


def test_nlupp_bad_label_names_file_and_record(data_dir, tmp_path):
  (tmp_path / "nlupp/data/hotels").mkdir(parents=True)
  (tmp_path / "nlupp/data/ontology.json").write_text((data_dir / "nlupp/data/ontology.json").read_text())
  fold = tmp_path / "nlupp/data/hotels/fold0.json"
  fold.write_text(json.dumps([{"text": "hi", "intents": ["greet"]}, {"text": "x", "intents": ["no_such"]}]))
  ontology = nlupp.read_ontology(tmp_path, "hotels")
  with pytest.raises(DataError, match=r"record 1: intent 'no_such' is not in the hotels ontology") as e:
    nlupp.read_fold(fold, "hotels", ontology, uid_prefix="t")
  _error_names(e, fold)


# ---------------------------------------------------------------------------------------------------------
# CrossNER


@pytest.mark.parametrize("domain", sorted(CROSSNER))
def test_crossner_split_sizes_mentions_and_types(data_dir, domain):
  sentences, mentions = CROSSNER[domain]
  data = crossner.read_crossner(data_dir, domain)
  splits = ("train", "validation", "test")
  assert tuple(len(data.splits[s]) for s in splits) == sentences
  assert tuple(sum(len(e.spans) for e in data.splits[s]) for s in splits) == mentions
  assert list(data.ontology.names) == CROSSNER_TYPES[domain].split()
  assert data.ontology.task == "ner"


def test_crossner_text_is_tokens_joined_by_spaces_and_spans_cover_bio_entities(data_dir):
  data = crossner.read_crossner(data_dir, "ai")
  first = data.splits["train"][0]
  lines = (data_dir / "crossner/ner_data/ai/train.txt").read_text().split("\n\n")[0].split("\n")
  tokens = [l.split("\t") for l in lines]
  assert first.text == " ".join(t for t, _ in tokens)
  # Rebuild entity strings from the tags independently of the reader.
  entities, current = [], None
  for tok, tag in tokens:
    if tag.startswith("B-"):
      current = [tag[2:], [tok]]
      entities.append(current)
    elif tag.startswith("I-"):
      current[1].append(tok)
  assert [(s.label, s.text) for s in first.spans] == [(t, " ".join(w)) for t, w in entities]
  assert all(first.text[s.start:s.end] == s.text for s in first.spans)


def test_crossner_descriptions_are_readable(data_dir):
  data = crossner.read_crossner(data_dir, "politics")
  descriptions = {a.name: a.description for a in data.ontology.attributes}
  assert descriptions["politicalparty"] == "politics political party"
  assert descriptions["politician"] == "politics politician"


def test_bio_sequence_starting_with_i_tag_is_rejected(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("The\tO\nbig\tO\n\nRussia\tI-country\n")
  with pytest.raises(DataError, match="I-country follows the sentence start or O") as e:
    crossner.read_bio_file(path, "politics", uid_prefix="t")
  _error_names(e, path, 4)


def test_bio_i_tag_of_another_type_is_rejected(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("United\tB-country\nRussia\tI-person\n")
  with pytest.raises(DataError, match="follows a country entity") as e:
    crossner.read_bio_file(path, "politics", uid_prefix="t")
  _error_names(e, path, 2)


def test_bio_line_without_tag_is_rejected(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("United\tB-country\nRussia\n")
  with pytest.raises(DataError, match="expected 'token<TAB>tag'") as e:
    crossner.read_bio_file(path, "politics", uid_prefix="t")
  _error_names(e, path, 2)


def test_empty_bio_file_is_rejected(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("\n\n")
  with pytest.raises(DataError, match="empty file") as e:
    crossner.read_bio_file(path, "ai", uid_prefix="t")
  _error_names(e, path)


_BIO_TOKEN = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
_BIO_TAG = st.sampled_from(["O", "B-person", "I-person", "B-org", "I-org", "X", "", "B-", "I-"])


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(lines=st.lists(st.one_of(st.tuples(_BIO_TOKEN, _BIO_TAG).map("\t".join), st.just(""),
                                           _BIO_TOKEN), max_size=12))
def test_fuzzed_bio_files_give_examples_or_data_error(tmp_path, lines):
  path = tmp_path / "fuzz.txt"
  path.write_text("\n".join(lines), encoding="utf-8")
  try:
    examples = crossner.read_bio_file(path, "ai", uid_prefix="t")
  except DataError as e:
    assert str(path) in str(e)
    return
  for example in examples:
    assert all(example.text[s.start:s.end] == s.text for s in example.spans)


# ---------------------------------------------------------------------------------------------------------
# TOPv2


@pytest.mark.parametrize("domain", sorted(TOPV2))
def test_topv2_split_sizes_and_label_inventory(topv2_data, domain):
  train, valid, test, n_intents, n_slots, roots, nested = TOPV2[domain]
  data = topv2_data[domain]
  assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [train, valid, test]
  kinds = [a.kind for a in data.ontology.attributes]
  assert (kinds.count("intent"), kinds.count("slot")) == (n_intents, n_slots)
  assert len({e.intents[0] for e in data.splits["train"]}) == roots
  assert sum(e.parse.count("[IN:") > 1 for e in data.splits["train"]) == nested


def test_topv2_union_of_labels_over_all_domains(topv2_data):
  intents = {a.name for d in topv2_data.values() for a in d.ontology.attributes if a.kind == "intent"}
  slots = {a.name for d in topv2_data.values() for a in d.ontology.attributes if a.kind == "slot"}
  assert (len(intents), len(slots)) == (82, 84)
  assert sum(len(d.splits["train"]) for d in topv2_data.values()) == 124597


@pytest.mark.parametrize("domain", sorted(TOPV2_LOW_RESOURCE))
def test_topv2_low_resource_splits(topv2_data, domain):
  rows_train, rows_valid, n_intents, n_slots = TOPV2_LOW_RESOURCE[domain]
  data = topv2_data[domain]
  assert len(data.splits["fewshot_train"]) == rows_train
  assert len(data.splits["fewshot_validation"]) == rows_valid
  labels = set()
  for e in data.splits["fewshot_train"]:
    labels |= topv2.parse_top(e.parse).labels()
  assert sum(l.startswith("IN:") for l in labels) == n_intents
  assert sum(l.startswith("SL:") for l in labels) == n_slots


def test_topv2_other_domains_have_no_fewshot_split(topv2_data):
  assert all("fewshot_train" not in topv2_data[d].splits for d in TOPV2 if d not in TOPV2_LOW_RESOURCE)


def test_topv2_example_keeps_utterance_parse_and_top_level_slots(data_dir):
  path = data_dir / "topv2/low_resource_splits/reminder_train_25spis.tsv"
  examples, _ = topv2.read_topv2_file(path, "reminder", uid_prefix="t")
  e = next(x for x in examples if x.text.startswith("Remind me to email the HOA"))
  assert e.intents == ("IN:CREATE_REMINDER", "IN:SEND_MESSAGE")
  assert [(s.label, s.text) for s in e.spans] == [
      ("SL:PERSON_REMINDED", "me"),
      ("SL:TODO", "email the HOA about the fencing company coming to do an estimate"),
      ("SL:DATE_TIME", "next Tuesday at 10 AM")]
  assert e.parse.startswith("[IN:CREATE_REMINDER Remind [SL:PERSON_REMINDED me ]")


def test_topv2_spans_are_character_offsets_of_the_utterance(topv2_data):
  data = topv2_data["weather"]
  for e in data.splits["validation"]:
    for s in e.spans:
      assert e.text[s.start:s.end] == s.text


def test_topv2_quote_characters_are_literal(tmp_path):
  path = tmp_path / "x.tsv"
  path.write_text('domain\tutterance\tsemantic_parse\nweather\tis it "cold\t[IN:GET_WEATHER is it "cold ]\n')
  (example,), _ = topv2.read_topv2_file(path, "weather", uid_prefix="t")
  assert example.text == 'is it "cold'


def test_topv2_unbalanced_bracket_is_rejected(tmp_path):
  path = tmp_path / "weather_train.tsv"
  path.write_text("domain\tutterance\tsemantic_parse\n"
                  "weather\thow cold\t[IN:GET_WEATHER how [SL:WEATHER_ATTRIBUTE cold ] ]\n"
                  "weather\thow hot\t[IN:GET_WEATHER how [SL:WEATHER_ATTRIBUTE hot ]\n")
  with pytest.raises(DataError, match="unbalanced_brackets") as e:
    topv2.read_topv2_file(path, "weather", uid_prefix="t")
  _error_names(e, path, 3)


def test_topv2_row_with_missing_field_is_rejected(tmp_path):
  path = tmp_path / "weather_train.tsv"
  path.write_text("domain\tutterance\tsemantic_parse\nweather\thow cold\n")
  with pytest.raises(DataError, match="expected 3 tab-separated fields") as e:
    topv2.read_topv2_file(path, "weather", uid_prefix="t")
  _error_names(e, path, 2)


def test_topv2_parse_that_does_not_spell_the_utterance_is_rejected(tmp_path):
  path = tmp_path / "weather_train.tsv"
  path.write_text("domain\tutterance\tsemantic_parse\nweather\thow warm\t[IN:GET_WEATHER how cold ]\n")
  with pytest.raises(DataError, match="do not spell the utterance") as e:
    topv2.read_topv2_file(path, "weather", uid_prefix="t")
  _error_names(e, path, 2)


def test_empty_topv2_file_is_rejected(tmp_path):
  path = tmp_path / "weather_train.tsv"
  path.write_text("")
  with pytest.raises(DataError, match="empty file") as e:
    topv2.read_topv2_file(path, "weather", uid_prefix="t")
  _error_names(e, path)


_TSV_CELL = st.text(alphabet=st.sampled_from(list("ab [] IN:SL:X\"'\t\n\\")), max_size=30)


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(rows=st.lists(st.tuples(_TSV_CELL, _TSV_CELL), max_size=5), header=st.booleans())
def test_fuzzed_topv2_files_give_examples_or_data_error(tmp_path, rows, header):
  path = tmp_path / "fuzz.tsv"
  head = "domain\tutterance\tsemantic_parse\n" if header else ""
  path.write_text(head + "".join(f"weather\t{u}\t{p}\n" for u, p in rows), encoding="utf-8")
  try:
    examples, _ = topv2.read_topv2_file(path, "weather", uid_prefix="t")
  except DataError as e:
    assert str(path) in str(e)
    return
  for example in examples:
    assert all(example.text[s.start:s.end] == s.text for s in example.spans)


# ---------------------------------------------------------------------------------------------------------
# Custom JSONL / CSV


def _write(path: pathlib.Path, rows: list) -> pathlib.Path:
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def test_custom_reads_the_front_desk_example():
  data = custom.read_custom("front_desk", train=FRONT_DESK / "train.jsonl",
                            validation=FRONT_DESK / "validation.jsonl", test=FRONT_DESK / "test.jsonl",
                            ontology=FRONT_DESK / "ontology.json")
  assert {k: len(v) for k, v in data.splits.items()} == {"train": 102, "validation": 25, "test": 25}
  assert data.ontology.task == "multi_intent"
  assert data.splits["train"][0].attributes == ("book_room", "date", "room_type")


def test_custom_infers_ontology_and_task_from_labels(tmp_path):
  train = _write(tmp_path / "t.jsonl", [
      {"text": "book a suite", "intents": ["book"], "spans": [{"start": 7, "end": 12, "label": "room"}]},
      {"text": "hello", "intents": ["greet"]}])
  data = custom.read_custom("mine", train=train)
  assert data.ontology.task == "multi_intent"
  assert [(a.name, a.kind, a.description) for a in data.ontology.attributes] == [
      ("book", "intent", "book"), ("greet", "intent", "greet"), ("room", "slot", "room")]
  assert data.splits["train"][0].spans[0].text == "suite"


def test_custom_entities_alias_gives_a_ner_task(tmp_path):
  train = _write(tmp_path / "t.jsonl", [{"text": "Ada Lovelace wrote", "entities": [
      {"start": 0, "end": 12, "label": "person"}]}])
  data = custom.read_custom("mine", train=train)
  assert data.ontology.task == "ner"
  assert data.ontology.attributes[0].kind == "entity"


def test_custom_parse_rows_give_a_semantic_parse_task(tmp_path):
  train = _write(tmp_path / "t.jsonl", [
      {"text": "how cold is it?", "parse": "[IN:GET_WEATHER how [SL:ATTR cold ] is it ? ]"}])
  data = custom.read_custom("mine", train=train)
  assert data.ontology.task == "semantic_parse"
  (example,) = data.splits["train"]
  assert example.spans[0].text == "cold" and example.intents == ("IN:GET_WEATHER",)


def test_custom_csv_encoding(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text('text,intents,spans\n"double room, friday",book;change,0:11:room_type;13:19:date\n')
  (example,) = custom.read_custom("mine", train=path).splits["train"]
  assert example.intents == ("book", "change")
  assert [(s.label, s.text) for s in example.spans] == [("room_type", "double room"), ("date", "friday")]


def test_custom_malformed_json_line_names_file_and_line(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "ok", "intents": ["a"]}, '{"text": "broken",'])
  with pytest.raises(DataError, match="malformed JSON") as e:
    custom.read_custom("mine", train=path)
  _error_names(e, path, 2)


def test_custom_row_with_missing_field_names_file_and_line(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "ok", "intents": ["a"]}, {"intents": ["a"]}])
  with pytest.raises(DataError, match="missing field 'text'") as e:
    custom.read_custom("mine", train=path)
  _error_names(e, path, 2)


def test_custom_label_absent_from_ontology_names_file_and_line(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "hi", "intents": ["book_room"]},
                                       {"text": "x", "intents": ["teleport"]}])
  with pytest.raises(DataError, match="intent 'teleport' is not an intent of the ontology") as e:
    custom.read_custom("mine", train=path, ontology=FRONT_DESK / "ontology.json")
  _error_names(e, path, 2)


def test_custom_empty_file_is_rejected(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_text("\n")
  with pytest.raises(DataError, match="empty file") as e:
    custom.read_custom("mine", train=path)
  _error_names(e, path)


def test_custom_span_that_does_not_match_its_text_is_rejected(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "book a suite", "intents": ["b"], "spans": [
      {"start": 7, "end": 12, "label": "room", "text": "villa"}]}])
  with pytest.raises(DataError, match="has text 'villa'") as e:
    custom.read_custom("mine", train=path)
  _error_names(e, path, 1)


def test_custom_crossing_spans_are_rejected(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "abcdef", "spans": [
      {"start": 0, "end": 4, "label": "x"}, {"start": 2, "end": 6, "label": "y"}]}])
  with pytest.raises(DataError, match="crosses another span"):
    custom.read_custom("mine", train=path)


def test_custom_skip_invalid_counts_skipped_rows(tmp_path):
  path = _write(tmp_path / "t.jsonl", [{"text": "hi", "intents": ["book_room"]}, "{oops",
                                       {"intents": ["book_room"]}, {"text": "x", "intents": ["teleport"]},
                                       {"text": "bye", "intents": ["check_out"]}])
  data, skipped = custom.read_custom_skipping_invalid("mine", train=path, ontology=FRONT_DESK / "ontology.json")
  assert skipped == 3
  assert [e.text for e in data.splits["train"]] == ["hi", "bye"]


def test_custom_bad_ontology_kind_is_rejected(tmp_path):
  path = tmp_path / "o.json"
  path.write_text(json.dumps({"task": "ner", "attributes": [{"name": "x", "kind": "colour", "description": "x"}]}))
  data = _write(tmp_path / "t.jsonl", [{"text": "x"}])
  with pytest.raises(DataError, match=r"attributes\[0\]: field 'kind' is 'colour'"):
    custom.read_custom("mine", train=data, ontology=path)


_JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-3, 20) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["start", "end", "label", "text"]), inner, max_size=4),
                           max_leaves=8)
_ROW = st.one_of(
    st.fixed_dictionaries({}, optional={"text": _JSON_VALUE | st.text(max_size=12), "intents": _JSON_VALUE,
                                        "spans": _JSON_VALUE, "entities": _JSON_VALUE,
                                        "parse": _JSON_VALUE}).map(json.dumps),
    st.text(max_size=20))


@hypothesis.settings(max_examples=200, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(rows=st.lists(_ROW, max_size=5), skip=st.booleans())
def test_fuzzed_jsonl_files_give_data_or_data_error(tmp_path, rows, skip):
  path = tmp_path / "fuzz.jsonl"
  path.write_text("\n".join(r.replace("\n", " ") for r in rows), encoding="utf-8")
  try:
    if skip:
      data, _ = custom.read_custom_skipping_invalid("fuzz", train=path)
    else:
      data = custom.read_custom("fuzz", train=path)
  except DataError as e:
    assert str(path) in str(e) or "labels" in str(e)
    return
  for example in data.splits["train"]:
    assert all(example.text[s.start:s.end] == s.text for s in example.spans)


# ---------------------------------------------------------------------------------------------------------
# Catalog


def test_catalog_unknown_task_lists_known_names():
  with pytest.raises(ConfigError) as e:
    catalog.load_task_data("nlupp_restaurants", data_dir=".")
  assert "nlupp_hotels" in str(e.value) and "topv2_weather" in str(e.value)


def test_catalog_names_sixteen_benchmark_domains():
  assert len(catalog.BENCHMARK_DOMAINS) == 16
  assert catalog.BENCHMARK_DOMAINS["crossner_ai"].domain == "ai"


def test_catalog_reads_data_dir_from_environment(data_dir, monkeypatch):
  monkeypatch.setenv("MSP_DATA_DIR", str(data_dir))
  assert len(catalog.load_task_data("nlupp_hotels").splits["train"]) == 914


def test_catalog_without_data_dir_is_a_config_error(monkeypatch):
  monkeypatch.delenv("MSP_DATA_DIR", raising=False)
  with pytest.raises(ConfigError, match="MSP_DATA_DIR"):
    catalog.load_task_data("nlupp_hotels")


def test_catalog_registered_loader_is_used_and_cannot_shadow_a_benchmark():
  data = custom.read_custom("front_desk", train=FRONT_DESK / "train.jsonl", ontology=FRONT_DESK / "ontology.json")
  catalog.register_loader("my_front_desk", lambda: data)
  try:
    assert catalog.load_task_data("my_front_desk") is data
    assert "my_front_desk" in catalog.known_tasks()
    with pytest.raises(ConfigError, match="already registered"):
      catalog.register_loader("my_front_desk", lambda: data)
  finally:
    catalog.unregister_loader("my_front_desk")
  with pytest.raises(ConfigError, match="is a benchmark task"):
    catalog.register_loader("topv2_weather", lambda: data)


def test_every_message_of_a_reader_error_names_a_path(tmp_path):
  # A missing file is reported with its path by every reader.
  for call in (lambda: crossner.read_bio_file(tmp_path / "nope.txt", "ai", uid_prefix="t"),
               lambda: topv2.read_topv2_file(tmp_path / "nope.tsv", "weather", uid_prefix="t"),
               lambda: custom.read_custom("x", train=tmp_path / "nope.jsonl"),
               lambda: nlupp.read_nlupp(tmp_path, "hotels")):
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
      call()
