"""`msp_jax.files`: atomic writes (umask, abandoned temporaries), UTF-8 text and JSON Lines with a byte-order
mark or bad bytes, and the output-folder check."""

from __future__ import annotations

import codecs
import errno
import gzip
import json
import os
import pathlib
import random
import stat
import subprocess
import sys

import pytest

from msp_jax import files
from msp_jax.errors import ConfigError, DataError


def _temporaries(path: pathlib.Path) -> list[str]:
  return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_write_gives_the_file_the_users_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    files.atomic_write_text(tmp_path / "out.json", "{}\n")
    files.write_jsonl_rows(tmp_path / "rows.jsonl", [{"a": 1}])
  finally:
    os.umask(old)
  for name in ("out.json", "rows.jsonl"):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
  target = tmp_path / "synthetic.jsonl"
  # A writer killed mid-write: the process that created (and locked) the temporary file is gone.
  script = ("import os, sys, pathlib\nfrom msp_jax import files\n"
            "with files.atomic_path(sys.argv[1]) as tmp:\n"
            "  tmp.write_text('half a file')\n"
            "  os._exit(9)\n")
  subprocess.run([sys.executable, "-c", script, str(target)], check=False)
  legacy = tmp_path / ".synthetic.jsonl.k3j_x8ab.tmp"  # the name an earlier version's mkstemp gave
  legacy.write_text("older half")
  assert len(_temporaries(target)) == 2

  rows = [{"text": f"row {random.random()}"}]
  files.write_jsonl_rows(target, rows)
  assert _temporaries(target) == []
  assert [json.loads(line) for line in target.read_text().splitlines()] == rows


def test_a_temporary_a_live_writer_holds_is_not_removed(tmp_path):
  target = tmp_path / "metrics.json"
  with files.atomic_path(target) as held:
    held.write_text("in progress")
    files.atomic_write_text(target, "another writer")  # same target, finishes first
    assert held.read_text() == "in progress"
  assert target.read_text() == "in progress"
  assert _temporaries(target) == []


def test_other_files_temporaries_are_not_touched(tmp_path):
  other = tmp_path / ".metrics.json.abcd.tmp"
  other.write_text("not ours")
  files.atomic_write_text(tmp_path / "metrics", "x")
  assert other.read_text() == "not ours"


def test_jsonl_with_a_byte_order_mark_is_read(tmp_path):
  rows = [{"text": "caf\u00e9 \u2028 line separator inside a string", "n": i} for i in range(3)]
  path = tmp_path / "rows.jsonl"
  path.write_bytes(codecs.BOM_UTF8 + "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())
  assert [row for _, row in files.read_jsonl_rows(path)] == rows


def test_non_utf8_bytes_name_the_line_and_column(tmp_path):
  path = tmp_path / "texts.txt"
  path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
  with pytest.raises(DataError) as e:
    list(files.text_lines(path))
  assert str(e.value) == (f"{path}:3: not UTF-8 text (byte 0xff at byte 5 of the line); save the file as UTF-8")


def test_text_lines_split_at_newlines_only(tmp_path):
  path = tmp_path / "texts.txt"
  text = "one\x0bstill one\u2028and still\r\ntwo\n"
  path.write_text(text, encoding="utf-8", newline="")
  assert list(files.text_lines(path)) == [(1, "one\x0bstill one\u2028and still"), (2, "two")]
  assert files.read_text(path) == text


def test_writable_directory_is_created(tmp_path):
  path = tmp_path / "a" / "b"
  assert files.writable_directory(path) == path and path.is_dir()
  assert list(path.iterdir()) == []  # the write probe is gone


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "run"
  path.write_text("x")
  with pytest.raises(ConfigError, match=r"^workdir .*/run is a file; it must be a folder \(created if missing\)$"):
    files.writable_directory(path)


def test_a_workdir_under_a_file_names_the_file(tmp_path):
  (tmp_path / "run").write_text("x")
  with pytest.raises(ConfigError) as e:
    files.writable_directory(tmp_path / "run" / "sub", "--workdir")
  assert str(e.value) == f"--workdir {tmp_path / 'run' / 'sub'}: cannot create the folder, {tmp_path / 'run'} is a file"


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch):
  # Root may write anywhere, so the read-only file system is simulated where the probe file is created.
  def read_only(self, *args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

  monkeypatch.setattr(pathlib.Path, "touch", read_only)
  with pytest.raises(ConfigError) as e:
    files.writable_directory(tmp_path)
  assert str(e.value) == f"workdir {tmp_path}: cannot write in the folder (Read-only file system)"


def test_gzipped_jsonl_round_trips_byte_for_byte_and_damage_is_one_line(tmp_path):
  rows = [{"uid": f"u{i}", "text": "caf\u00e9 \u2028 line", "n": i} for i in range(50)]
  first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
  files.write_jsonl_rows(first, rows)
  files.write_jsonl_rows(second, rows)
  assert first.read_bytes() == second.read_bytes()  # no timestamp in the header
  assert gzip.decompress(first.read_bytes()).decode("utf-8").count("\n") == 50
  assert [row for _, row in files.read_jsonl_rows(first)] == rows
  first.write_bytes(first.read_bytes()[:-20])
  with pytest.raises(DataError, match="a.jsonl.gz: damaged gzip data"):
    list(files.read_jsonl_rows(first))
