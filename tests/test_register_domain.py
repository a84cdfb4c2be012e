"""New domains: `tasks.register_domain` through SeqIO feature converters, and `msp register` persistence."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

T5_VOCAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "t5_vocab" / "sentencepiece.model"
# Read when `tasks` is imported; the fixture copy stands in for the public T5 vocabulary.
os.environ.setdefault("MSP_T5_VOCAB", str(T5_VOCAB))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import seqio  # noqa: E402

import tasks  # noqa: E402
from msp_jax import cli  # noqa: E402
from msp_jax.backbones.byte_tokenizer import ByteTokenizer  # noqa: E402
from msp_jax.data import serialization  # noqa: E402
from msp_jax.data.schema import Example, Span  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

ROOMS = ["single room", "double room", "suite", "twin room", "family room"]
DATES = ["tonight", "next friday", "March 3rd", "the weekend", "tomorrow"]
NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"]


def _toy_record(rng: random.Random) -> dict:
  """A random front-desk utterance with an intent and character spans."""
  kind = rng.choice(["book", "cancel", "ask"])
  if kind == "book":
    room, date = rng.choice(ROOMS), rng.choice(DATES)
    text = f"Could I book a {room} for {date}?"
    spans = [(text.index(room), room, "room_type"), (text.rindex(date), date, "date")]
    intents = ["book_room"]
  elif kind == "cancel":
    name = rng.choice(NAMES)
    text = f"Please cancel the booking for {name}."
    spans = [(text.index(name), name, "person_name")]
    intents = ["cancel_booking"]
  else:
    text = rng.choice(["What time is breakfast?", "Is the pool open late?", "Do you have parking?"])
    spans, intents = [], ["ask_facilities"]
  return {"text": text, "intents": intents,
          "spans": [{"start": s, "end": s + len(t), "label": l, "text": t} for s, t, l in spans]}


def _write_jsonl(path: pathlib.Path, records: list[dict]) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


@pytest.fixture
def toy_files(tmp_path) -> dict[str, pathlib.Path]:
  rng = random.Random()  # fresh data on every run
  return {split: _write_jsonl(tmp_path / f"{split}.jsonl", [_toy_record(rng) for _ in range(n)])
          for split, n in (("train", 12), ("validation", 5), ("test", 7))}


@pytest.fixture
def msp_home(tmp_path, monkeypatch) -> pathlib.Path:
  home = tmp_path / "msp_home"
  monkeypatch.setenv("MSP_HOME", str(home))
  return home


def _example(record: dict, uid: str = "x") -> Example:
  return Example(uid=uid, domain="toy", text=record["text"], intents=tuple(record["intents"]),
                 spans=tuple(Span(**s) for s in record["spans"]))


def _records(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def _unique_name(prefix: str) -> str:
  return f"{prefix}_{random.Random().randrange(10**8)}"


def test_registered_domain_through_enc_dec_converter(toy_files):
  name = _unique_name("toy_encdec")
  names = tasks.register_domain(name, **toy_files)
  assert name in names and f"{name}_smollm2" in names
  lengths = {"inputs": 32, "targets": 48}
  ds = seqio.get_dataset(name, task_feature_lengths=lengths, dataset_split="validation", shuffle=False,
                         feature_converter=seqio.EncDecFeatureConverter(pack=False))
  rows = list(ds.as_numpy_iterator())
  records = _records(toy_files["validation"])
  assert len(rows) == len(records)
  vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
  for row, record in zip(rows, records):
    assert row["encoder_input_tokens"].shape == (32,)
    assert row["decoder_target_tokens"].shape == (48,)
    assert row["decoder_input_tokens"].shape == (48,)
    assert row["decoder_loss_weights"].shape == (48,)
    expected = serialization.serialize(_example(record), "multi_intent")
    assert vocab.decode(row["decoder_target_tokens"].tolist()) == expected
    # Decoder inputs are the targets shifted right behind BOS = 0.
    np.testing.assert_array_equal(row["decoder_input_tokens"][1:], row["decoder_target_tokens"][:-1])
    assert vocab.decode(row["encoder_input_tokens"].tolist()) == record["text"]


def test_registered_domain_through_decoder_converter(toy_files):
  # A decoder-only backbone's tokenizer (here the byte tokenizer of the tiny test backbones).
  vocabulary = tasks.TokenizerVocabulary(ByteTokenizer(), name="bytes")
  name = _unique_name("toy_decoder")
  tasks.register_domain(name, **toy_files)
  assert f"{name}_bytes" in tasks.add_vocabulary("bytes", vocabulary, overwrite=True)
  lengths = {"inputs": 64, "targets": 128}
  ds = seqio.get_dataset(f"{name}_bytes", task_feature_lengths=lengths, dataset_split="train",
                         shuffle=False, feature_converter=seqio.DecoderFeatureConverter(pack=False))
  rows = list(ds.as_numpy_iterator())
  records = _records(toy_files["train"])
  assert len(rows) == len(records)
  for row, record in zip(rows, records):
    for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                "decoder_causal_attention"):
      assert row[key].shape == (64 + 128,), key
    # Prefix LM: the loss covers exactly the target tokens, which follow the input tokens.
    target_ids = row["decoder_target_tokens"][row["decoder_loss_weights"] == 1].tolist()
    expected = serialization.serialize(_example(record), "multi_intent")
    assert vocabulary.decode(target_ids) == expected
    prefix_ids = row["decoder_target_tokens"][:row["decoder_causal_attention"].sum() - 1].tolist()
    assert vocabulary.decode(prefix_ids) == record["text"]


def test_register_domain_plugs_into_the_catalog(toy_files):
  from msp_jax.data import catalog
  name = _unique_name("toy_catalog")
  tasks.register_domain(name, **toy_files)
  data = catalog.load_task_data(name)
  assert len(data.splits["test"]) == len(_records(toy_files["test"]))


def test_register_domain_twice_needs_overwrite(toy_files):
  from msp_jax.errors import ConfigError
  name = _unique_name("toy_twice")
  tasks.register_domain(name, **toy_files)
  with pytest.raises(ConfigError, match="already registered"):
    tasks.register_domain(name, **toy_files)
  tasks.register_domain(name, **toy_files, overwrite=True)


def test_cli_register_persists_for_a_fresh_process(toy_files, msp_home, capsys):
  name = _unique_name("toy_cli")
  status = cli.main(["register", name, "--train", str(toy_files["train"]),
                     "--validation", str(toy_files["validation"]), "--test", str(toy_files["test"])])
  assert status == 0
  folder = msp_home / "domains" / name
  metadata = json.loads((folder / "domain.json").read_text())
  assert metadata["name"] == name and metadata["task"] == "multi_intent"
  assert (folder / metadata["splits"]["train"]).read_bytes() == toy_files["train"].read_bytes()
  assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
  assert name in capsys.readouterr().out

  script = (
      "import sys, seqio, tasks\n"
      "from msp_jax.data import catalog\n"
      f"ds = seqio.get_mixture_or_task({name!r}).get_dataset(sequence_length=None, split='test', shuffle=False)\n"
      f"print(sum(1 for _ in ds), len(catalog.load_task_data({name!r}).splits['validation']))\n")
  env = {**os.environ, "MSP_HOME": str(msp_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-2:] == [str(len(_records(toy_files["test"]))),
                                        str(len(_records(toy_files["validation"])))]


def _error_lines(capsys) -> list[str]:
  return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_register_missing_file_is_one_error_line(tmp_path, msp_home, capsys):
  missing = tmp_path / "nope.jsonl"
  status = cli.main(["register", _unique_name("toy_missing"), "--train", str(missing)])
  assert status == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0]
  assert not (msp_home / "domains").exists() or not any((msp_home / "domains").iterdir())


def test_cli_register_duplicate_name_is_one_error_line(toy_files, msp_home, capsys):
  name = _unique_name("toy_dup")
  assert cli.main(["register", name, "--train", str(toy_files["train"])]) == 0
  capsys.readouterr()
  assert cli.main(["register", name, "--train", str(toy_files["test"])]) == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and lines[0].startswith("error:")
  assert name in lines[0] and "--overwrite" in lines[0]
  # The first registration is untouched.
  folder = msp_home / "domains" / name
  assert (folder / "train.jsonl").read_bytes() == toy_files["train"].read_bytes()


def test_cli_register_overwrite_replaces_the_files(toy_files, msp_home):
  name = _unique_name("toy_over")
  assert cli.main(["register", name, "--train", str(toy_files["train"])]) == 0
  assert cli.main(["register", name, "--train", str(toy_files["test"]), "--overwrite"]) == 0
  folder = msp_home / "domains" / name
  assert (folder / "train.jsonl").read_bytes() == toy_files["test"].read_bytes()
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=None, split="train", shuffle=False)
  assert sum(1 for _ in ds) == len(_records(toy_files["test"]))


def test_cli_register_malformed_file_names_the_line(tmp_path, msp_home, capsys):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "hello", "intents": ["greet"]}\n{"text": \n', encoding="utf-8")
  name = _unique_name("toy_bad")
  assert cli.main(["register", name, "--train", str(bad)]) == 2
  lines = _error_lines(capsys)
  assert len(lines) == 1 and lines[0].startswith("error:") and f"{bad}:2" in lines[0]
  assert not (msp_home / "domains" / name).exists()


def test_broken_registry_entry_is_skipped_with_a_warning(toy_files, msp_home):
  good = _unique_name("toy_good")
  tasks.persist_domain(good, train=toy_files["train"])
  broken = msp_home / "domains" / "broken"
  broken.mkdir()
  (broken / "domain.json").write_text("{not json", encoding="utf-8")
  with pytest.warns(UserWarning, match="broken"):
    names = tasks.register_persisted_domains()
  assert good in names and "broken" not in seqio.TaskRegistry.names()


def test_cli_register_refuses_the_shipped_example_name_even_with_overwrite(toy_files, msp_home, capsys):
  from msp_jax.data import catalog
  shipped = catalog.load_task_data("front_desk")
  for extra in ([], ["--overwrite"]):
    assert cli.main(["register", "front_desk", "--train", str(toy_files["train"]), *extra]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "'front_desk' is the example domain shipped with msp-jax" in lines[0]
  assert not (msp_home / "domains").exists()
  assert catalog.load_task_data("front_desk") == shipped


def test_a_registered_domain_is_loaded_by_name_without_the_seqio_layer(toy_files, msp_home, capsys):
  from msp_jax.data import catalog, registry
  name = _unique_name("toy_catalog_only")
  registry.persist_domain(name, train=toy_files["train"], test=toy_files["test"])  # no `tasks` involved
  assert name in catalog.known_tasks()
  assert len(catalog.load_task_data(name).splits["test"]) == len(_records(toy_files["test"]))
  assert cli.main(["data-stats", name, "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["splits"] == {"train": len(_records(toy_files["train"])),
                                                           "test": len(_records(toy_files["test"]))}


def _texts(data) -> dict[str, list[str]]:
  return {split: [e.text for e in examples] for split, examples in data.splits.items()}


def test_a_reader_waits_for_an_overwrite_in_flight_and_sees_the_new_version(tmp_path, msp_home, monkeypatch):
  import threading
  from msp_jax.data import catalog, registry

  name = _unique_name("toy_swap")
  rng = random.Random()
  versions = []
  for v in range(2):
    folder = tmp_path / f"v{v}"
    folder.mkdir()
    versions.append({split: _write_jsonl(folder / f"{split}.jsonl", [_toy_record(rng) for _ in range(n)])
                     for split, n in (("train", 6 + v), ("test", 3 + v))})
  registry.persist_domain(name, **versions[0])
  expected_new = _texts(registry.read_files(name, **versions[1]))

  # Hold the writer between its two renames (old folder moved aside, new one not yet in place).
  mid_swap, resume = threading.Event(), threading.Event()
  real_rename = os.rename

  def slow_rename(src, dst):
    real_rename(src, dst)
    if pathlib.Path(dst).name.startswith(f".{name}.old-"):
      mid_swap.set()
      resume.wait(timeout=30)

  monkeypatch.setattr(os, "rename", slow_rename)
  writer = threading.Thread(target=registry.persist_domain, args=(name,), kwargs={**versions[1], "overwrite": True})
  writer.start()
  assert mid_swap.wait(timeout=30)
  seen = []
  reader = threading.Thread(target=lambda: seen.append(_texts(catalog.load_task_data(name))))
  reader.start()
  reader.join(timeout=0.5)
  assert reader.is_alive()  # blocked by the writer's lock instead of finding no folder
  resume.set()
  writer.join(timeout=30)
  reader.join(timeout=30)
  assert seen == [expected_new]


def test_concurrent_overwrites_of_one_name_leave_one_whole_version(tmp_path, msp_home):
  import threading
  from msp_jax.data import registry

  name = _unique_name("toy_race")
  rng = random.Random()
  versions, expected = [], []
  for v in range(2):
    folder = tmp_path / f"v{v}"
    folder.mkdir()
    files = {split: _write_jsonl(folder / f"{split}.jsonl", [_toy_record(rng) for _ in range(n)])
             for split, n in (("train", 5 + v), ("validation", 2 + v))}
    versions.append(files)
    expected.append(_texts(registry.read_files(name, **files)))
  registry.persist_domain(name, **versions[0])
  errors, seen = [], []

  def overwrite(files):
    try:
      for _ in range(15):
        registry.persist_domain(name, **files, overwrite=True)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  def read():
    for _ in range(30):
      data = registry.read_domain(name)
      seen.append(None if data is None else _texts(data))

  threads = [threading.Thread(target=overwrite, args=(v,)) for v in versions] + [threading.Thread(target=read)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert not errors
  assert seen and all(s in expected for s in seen)  # never absent, never train of one and validation of another
  assert _texts(registry.read_domain(name)) in expected
  assert [p.name for p in (msp_home / "domains").iterdir()] == [name]  # no staging or retired folder left
