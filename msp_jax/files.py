"""File helpers every stage shares: atomic writes, reading text and JSON Lines, checking an output folder.

Writes go to a temporary file in the same folder, then `os.replace`: a reader (or a crash) sees either the old
file or the complete new one, never a partial file. A temporary file that a killed writer left behind
(`.<name>.<random>.tmp`) is removed by the next successful write of the same file. Files are created with
the user's umask like any other output (not `mkstemp`'s 0600).

Text is read as UTF-8; a leading byte-order mark (which Windows editors write) is dropped, and bytes that are
not UTF-8 raise `DataError` naming the file, line and column.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import gzip
import io
import json
import os
import pathlib
import re
import secrets
import zlib
from typing import Any, Iterable, Iterator

from msp_jax.errors import ConfigError, DataError

_TEMPORARY_TAG = re.compile(r"[A-Za-z0-9_]{8}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; on success renames it over `path` (atomic on POSIX)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp, lock_fd = _create_locked_temporary(path)
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    os.close(lock_fd)
    if os.path.exists(tmp):
      os.unlink(tmp)
  _remove_abandoned_temporaries(path)


def _create_locked_temporary(path: pathlib.Path) -> tuple[pathlib.Path, int]:
  """Creates `.<name>.<random>.tmp` beside `path` (mode 0666 less the umask) and holds an exclusive lock on it.

  The lock tells a live writer's temporary file from one a killed writer left: the kernel drops a lock when
  its process dies. Returns the path and the descriptor holding the lock (close it when done).
  """
  while True:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    fcntl.flock(fd, fcntl.LOCK_EX)
    if os.fstat(fd).st_nlink:  # not removed as abandoned between its creation and the lock
      return tmp, fd
    os.close(fd)


def _remove_abandoned_temporaries(path: pathlib.Path) -> None:
  """Deletes `.<name>.<8 characters>.tmp` files of `path` that no live writer holds (left by a killed run).

  Eight characters: this module's hex names and the earlier `mkstemp` ones; `.a.json.1234abcd.tmp` belongs
  to `a.json`, not to `a`.
  """
  prefix = f".{path.name}."
  try:
    names = os.listdir(path.parent)
  except OSError:
    return
  for name in names:
    if not (name.startswith(prefix) and name.endswith(".tmp") and _TEMPORARY_TAG.fullmatch(name[len(prefix):-4])):
      continue
    candidate = path.parent / name
    try:
      fd = os.open(candidate, os.O_RDONLY)
    except OSError:
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      candidate.unlink()
    except OSError:
      pass  # a live writer holds it, or it is already gone
    finally:
      os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def write_jsonl_rows(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
  """One JSON object a line, written atomically; gzipped when `path` ends in '.gz' (with no timestamp, so the
  same rows give the same bytes)."""
  with atomic_path(path) as tmp, open(tmp, "wb") as raw:
    packed = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if str(path).endswith(".gz") else None
    with io.TextIOWrapper(packed or raw, encoding="utf-8", newline="\n") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def text_lines(path: str | os.PathLike, *, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
  """(line number, line) of a UTF-8 text file (gzipped when its name ends in '.gz'), a leading byte-order mark
  dropped.

  Lines end at '\\n' only: U+2028 and the other characters `str.splitlines` breaks at may sit inside a JSON
  string or a CSV cell. Without `keep_ends` the line ending ('\\n' or '\\r\\n') is removed.

  Raises:
    DataError: the file is missing or unreadable, or a line is not UTF-8 (names the line and byte column).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  try:
    f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror})") from None
  with f:
    for number, raw in _numbered(f, path):
      if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} "
                        "of the line); save the file as UTF-8") from None
      if not keep_ends:
        line = line[:-2] if line.endswith("\r\n") else line.rstrip("\n")
      yield number, line


def _numbered(f, path: pathlib.Path) -> Iterator[tuple[int, bytes]]:
  """(line number, raw line) of an open binary file; a damaged gzip stream is a DataError naming the file."""
  lines = enumerate(f, start=1)
  while True:
    try:
      item = next(lines)
    except StopIteration:
      return
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
      raise DataError(f"{path}: damaged gzip data ({e}); write the file again") from None
    yield item


def read_text(path: str | os.PathLike) -> str:
  """The whole text of a UTF-8 file (a leading byte-order mark dropped); DataError as in `text_lines`."""
  return "".join(line for _, line in text_lines(path, keep_ends=True))


def read_jsonl_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
  """(where, row) per non-blank line; `where` is 'path:line' for error messages."""
  path = pathlib.Path(path)
  for number, line in text_lines(path):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{number}: malformed JSON ({e.msg})") from e
    if not isinstance(row, dict):
      raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    yield f"{path}:{number}", row


def writable_directory(path: str | os.PathLike, what: str = "workdir") -> pathlib.Path:
  """Creates `path` (and its parents) if missing and checks a file can be written in it; returns it.

  Call it before any slow work, so a bad output folder costs nothing. `what` names the setting in the error.

  Raises:
    ConfigError: one line naming `what`, the path and the reason (a file is in the way, no permission, a
      read-only file system, ...).
  """
  path = pathlib.Path(path)
  blocking = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
  if blocking == path and not path.is_dir():
    raise ConfigError(f"{what} {path} is a file; it must be a folder (created if missing)")
  if blocking is not None and not blocking.is_dir():
    raise ConfigError(f"{what} {path}: cannot create the folder, {blocking} is a file")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"{what} {path}: cannot create the folder ({e.strerror or e})") from None
  probe = path / f".msp-write-check.{secrets.token_hex(4)}"
  try:
    probe.touch(exist_ok=False)
    probe.unlink()
  except OSError as e:
    raise ConfigError(f"{what} {path}: cannot write in the folder ({e.strerror or e})") from None
  return path
