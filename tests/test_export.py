"""Synthetic-data export: JSONL and TFRecord round-trip to identical records; writes are atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from msp_jax.synthesis import export
from msp_jax.data.schema import Example, Span
from msp_jax.errors import DataError


def random_records(n: int, seed: int) -> list[export.SyntheticRecord]:
  rng = np.random.default_rng(seed)
  words = ["book", "a", "room", "for", "tonight", "é", "two", "[x]", "|", "late", "check", "out", "ünï"]
  records = []
  for i in range(n):
    text = " ".join(rng.choice(words, size=int(rng.integers(1, 8))))
    spans = ()
    if len(text) > 3 and rng.random() < 0.7:
      start = int(rng.integers(0, len(text) - 2))
      end = int(rng.integers(start + 1, len(text) + 1))
      spans = (Span(start, end, "date", text[start:end]),)
    example = Example(uid=f"syn/{i}", domain="front_desk", text=text,
                      intents=tuple(rng.choice(["book_room", "wifi", "check_out"], size=int(rng.integers(0, 3)),
                                               replace=False)),
                      spans=spans, parse=None if rng.random() < 0.5 else f"[IN:X {text} ]")
    records.append(export.SyntheticRecord(example, float(rng.normal()), f"seed/{i % 3}", bool(rng.random() < 0.3),
                                          {"backbone": "smollm2-135m", "prompt_checkpoint": "/tmp/x", "seed": 3}))
  return records


def comparable(records):
  return [export.record_to_dict(r) for r in records]


def test_jsonl_round_trip(tmp_path):
  records = random_records(40, seed=1)
  export.write_jsonl(tmp_path / "s.jsonl", records)
  assert comparable(export.read_jsonl(tmp_path / "s.jsonl")) == comparable(records)


def test_tfrecord_round_trip(tmp_path):
  records = random_records(40, seed=2)
  export.write_tfrecord(tmp_path / "s.tfrecord", records)
  assert comparable(export.read_tfrecord(tmp_path / "s.tfrecord")) == comparable(records)


def test_jsonl_and_tfrecord_agree(tmp_path):
  records = random_records(25, seed=3)
  export.write_jsonl(tmp_path / "s.jsonl", records)
  export.write_tfrecord(tmp_path / "s.tfrecord", records)
  assert comparable(export.read_jsonl(tmp_path / "s.jsonl")) == comparable(export.read_tfrecord(tmp_path / "s.tfrecord"))


def test_malformed_jsonl_names_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"uid": "a"}\n', encoding="utf-8")
  with pytest.raises(DataError, match=r"bad.jsonl:1: not a synthetic-data record"):
    export.read_jsonl(path)
  path.write_text("\n{oops\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
    export.read_jsonl(path)


SLOW_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_export import random_records
from msp_jax.synthesis import export

def slow():
  for i, r in enumerate(random_records(200, seed=5)):
    if i == 20:
      print("ready", flush=True)
    time.sleep(0.01)
    yield r

export.write_jsonl(sys.argv[1], slow())
"""


def test_kill_during_export_leaves_old_file(tmp_path):
  path = tmp_path / "synthetic.jsonl"
  old = random_records(5, seed=9)
  export.write_jsonl(path, old)
  proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path), os.path.dirname(__file__)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "ready"
  assert any(p.name.startswith(".synthetic.jsonl.") for p in tmp_path.iterdir())  # mid-write
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert comparable(export.read_jsonl(path)) == comparable(old)
  # The complete new file replaces it when a writer finishes.
  new = random_records(7, seed=10)
  export.write_jsonl(path, new)
  assert comparable(export.read_jsonl(path)) == comparable(new)
