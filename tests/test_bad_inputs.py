"""Inputs that used to end in a traceback (or a kill) and are now one line naming the file or flag, and files
with a UTF-8 byte-order mark, which are read like any other."""

from __future__ import annotations

import codecs
import json
import random

import pytest

from msp_jax import cli
from msp_jax.backbones import llama
from msp_jax.data import custom


def _one_error_line(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_perplexity_of_non_utf8_bytes_names_the_line(capsys, tmp_path):
  path = tmp_path / "texts.txt"
  path.write_bytes(b"a fine line\n" + bytes([0xC3, 0x28]) + b" latin-1 leftovers\n")
  assert cli.main(["perplexity", "--backbone", "random:llama-tiny", "--input", str(path)]) == 2
  assert _one_error_line(capsys) == (f"error: {path}:2: not UTF-8 text (byte 0xc3 at byte 1 of the line); save "
                                     "the file as UTF-8")


def test_perplexity_reads_a_file_with_a_byte_order_mark_like_one_without(capsys, tmp_path):
  lines = ["book a room for tonight", "late check out please"]
  plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
  plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
  marked.write_bytes(codecs.BOM_UTF8 + plain.read_bytes())
  results = []
  for path in (plain, marked):
    assert cli.main(["perplexity", "--backbone", "random:llama-tiny", "--input", str(path), "--json"]) == 0
    results.append(json.loads(capsys.readouterr().out)["per_example"])
  assert results[0] == results[1]


def test_sample_with_an_empty_prompt_is_one_line(capsys):
  assert cli.main(["sample", "--backbone", "random:llama-tiny", "--prompt", "", "--num-samples", "1"]) == 2
  assert _one_error_line(capsys) == ("error: --prompt '' encodes to no tokens: give some text to continue (or "
                                     "--chat, which wraps it in the model's chat template)")


def test_an_empty_decoder_input_is_a_clear_error_not_a_zero_size_reduction():
  with pytest.raises(llama.ConfigError, match="needs at least one input token"):
    llama._last_real(llama.jnp.zeros((2, 0), bool))  # pylint: disable=protected-access


def test_sample_max_new_tokens_is_bounded_by_the_context_and_says_so(capsys):
  context = llama.LLAMA_CONFIGS["tiny"].context_length
  prompt = "hello"  # the tiny backbone's byte tokenizer: one token a byte
  status = cli.main(["sample", "--backbone", "random:llama-tiny", "--prompt", prompt, "--num-samples", "2",
                     "--max-new-tokens", "100000000", "--greedy"])
  captured = capsys.readouterr()
  assert status == 0, captured.err
  bound = context - len(prompt)
  assert (f"note: --max-new-tokens 100000000 is more than fits: random:llama-tiny attends over {context} "
          f"positions and the prompt takes {len(prompt)}; sampling at most {bound} new tokens") in captured.err
  assert len([line for line in captured.out.splitlines() if line.startswith("[")]) == 2


def test_sample_within_the_context_says_nothing(capsys):
  assert cli.main(["sample", "--backbone", "random:llama-tiny", "--prompt", "hi", "--num-samples", "1",
                   "--max-new-tokens", "3", "--greedy"]) == 0
  assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-new-tokens", "--num-samples"])
def test_sample_counts_below_one_are_one_line(capsys, flag):
  assert cli.main(["sample", "--backbone", "random:llama-tiny", "--prompt", "hi", flag, "0"]) == 2
  assert _one_error_line(capsys) == f"error: {flag} must be >= 1, got 0"


def _rows(n: int) -> list[dict]:
  rng = random.Random()
  rows = []
  for _ in range(n):
    room = rng.choice(["double room", "suite", "twin room"])
    text = f"book a {room} for {rng.choice(['friday', 'tonight'])}"
    rows.append({"text": text, "intents": [rng.choice(["book_room", "change_booking"])],
                 "spans": [{"start": text.index(room), "end": text.index(room) + len(room), "label": "room_type"}]})
  return rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_custom_files_with_a_byte_order_mark_read_like_files_without(tmp_path, suffix):
  rows = _rows(6)
  if suffix == ".jsonl":
    text = "".join(json.dumps(r) + "\n" for r in rows)
  else:
    text = "text,intents,spans\r\n" + "".join(
        f"\"{r['text']}\",{';'.join(r['intents'])},{r['spans'][0]['start']}:{r['spans'][0]['end']}:room_type\r\n"
        for r in rows)
  plain, marked = tmp_path / f"plain{suffix}", tmp_path / f"marked{suffix}"
  plain.write_text(text, encoding="utf-8", newline="")
  marked.write_bytes(codecs.BOM_UTF8 + plain.read_bytes())
  expected = custom.read_custom("toy", train=plain)
  got = custom.read_custom("toy", train=marked)
  assert got.ontology == expected.ontology
  assert [(e.text, e.intents, e.spans) for e in got.splits["train"]] == [
      (e.text, e.intents, e.spans) for e in expected.splits["train"]]
  assert [e.text for e in got.splits["train"]] == [r["text"] for r in rows]


def test_an_ontology_file_with_a_byte_order_mark_is_read(tmp_path):
  ontology = {"task": "multi_intent", "attributes": [{"name": "book_room", "kind": "intent"},
                                                     {"name": "change_booking", "kind": "intent"},
                                                     {"name": "room_type", "kind": "slot"}]}
  path = tmp_path / "ontology.json"
  path.write_bytes(codecs.BOM_UTF8 + json.dumps(ontology).encode())
  assert [a.name for a in custom.read_ontology_file(path, "toy").attributes] == [
      "book_room", "change_booking", "room_type"]


def test_a_json_string_holding_a_line_separator_stays_one_row(tmp_path):
  text = "book a suite\u2028for friday"  # U+2028: a line break to str.splitlines, not to JSON Lines
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"text": text, "intents": ["book_room"]}, ensure_ascii=False) + "\n", encoding="utf-8")
  assert [e.text for e in custom.read_custom("toy", train=path).splits["train"]] == [text]


def test_semantic_parse_rows_without_a_parse_name_the_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"text": "book a room", "intents": ["book_room"]}) + "\n", encoding="utf-8")
  with pytest.raises(custom.DataError) as e:
    custom.read_custom("toy", train=path, task="semantic_parse")
  assert str(e.value) == f"{path}:1: task semantic_parse needs a 'parse' (a TOP bracket string) in every row"


def test_a_file_mixing_parsed_and_plain_rows_names_the_plain_row(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"parse": "[IN:BOOK book [SL:ROOM a suite ] ]"}) + "\n\n"
                  + json.dumps({"text": "book a room", "intents": ["BOOK"]}) + "\n", encoding="utf-8")
  with pytest.raises(custom.DataError, match=rf"^{path}:3: task semantic_parse needs a 'parse'"):
    custom.read_custom("toy", train=path)


def test_perplexity_batch_size_below_one_is_one_line(capsys, tmp_path):
  (tmp_path / "t.txt").write_text("hello\n")
  assert cli.main(["perplexity", "--backbone", "random:llama-tiny", "--input", str(tmp_path / "t.txt"),
                   "--batch-size", "0"]) == 2
  assert _one_error_line(capsys) == "error: --batch-size must be >= 1, got 0"
