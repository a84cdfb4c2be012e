"""Gin at the edge: parse `--gin_file` / `--gin.NAME=VALUE` and turn gin's errors into one clear line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import inspect
import logging
import pathlib
import re
from typing import Iterator, Sequence

import gin

from msp_jax.errors import CheckpointError, ConfigError, DataError, MspError

GIN_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"

# gin appends where an error happened on extra lines; these patterns read them back.
_FILE_LOCATION = re.compile(r'In file "(?P<file>.+)", line (?P<line>\d+)')
_BINDING_LOCATION = re.compile(r"In bindings string line (?P<line>\d+)")
_CALL_LOCATION = re.compile(r"In call to configurable '(?P<name>[^']+)'")
_UNKNOWN_PARAMETER = re.compile(r"Configurable '(?P<configurable>[^']+)' doesn't have a parameter named "
                                r"'(?P<parameter>[^']+)'")
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching (?:reference )?'@?(?P<name>[^'()]+)")


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", "--gin-file", action="append", default=[],
                      help="gin file(s); relative paths are also looked up under gin_configs/")
  parser.add_argument("--gin_bindings", "--gin", action="append", default=[], metavar="NAME=VALUE",
                      help="extra binding, also accepted as --gin.NAME=VALUE")


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Pulls `--gin.NAME=VALUE` (and `--gin.NAME VALUE`) out of argv; returns (rest, bindings)."""
  rest, bindings = [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith("--gin."):
      body = arg[len("--gin."):]
      if "=" not in body:
        if i + 1 >= len(args):
          raise ConfigError(f"{arg}: expected --gin.NAME=VALUE")
        body = f"{body}={args[i + 1]}"
        i += 1
      name, value = body.split("=", 1)
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


def resolve_gin_file(name: str) -> str:
  path = pathlib.Path(name)
  for candidate in (path, GIN_CONFIG_DIR / path, GIN_CONFIG_DIR / path.with_suffix(".gin")):
    if candidate.is_file():
      return str(candidate)
  raise ConfigError(f"gin file {name!r} not found (looked in . and {GIN_CONFIG_DIR})")


def parse_gin(files: Sequence[str], bindings: Sequence[str], defaults: Sequence[str] = ()) -> None:
  """Parses `defaults`, then gin files, then bindings (a later binding of a name wins); any gin error becomes a
  one-line ConfigError naming the file and line."""
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_CONFIG_DIR))
  paths = [resolve_gin_file(f) for f in files]
  try:
    with _quiet_include_probes():
      gin.parse_config(list(defaults))
      gin.parse_config_files_and_bindings(paths, list(bindings), finalize_config=False)
  except (ValueError, KeyError, ImportError, SyntaxError, OSError) as e:
    raise ConfigError(describe_gin_error(e)) from None


def describe_gin_error(error: BaseException) -> str:
  """gin's multi-line parse error -> one line: what is wrong, where (file:line or --gin binding), a hint."""
  if isinstance(error, SyntaxError) and error.lineno is not None:
    return f"gin syntax error: {error.msg.rstrip('.')} {_where(error.filename, error.lineno, error.text)}"
  text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  if not lines:
    return f"gin configuration: {type(error).__name__}"
  head, where = lines[0].rstrip("."), ""
  for i, line in enumerate(lines[1:], start=1):
    found = _FILE_LOCATION.match(line) or _BINDING_LOCATION.match(line)
    if found:
      source = lines[i + 1] if i + 1 < len(lines) else None
      where = " " + _where(found.groupdict().get("file"), int(found["line"]), source)
      break
  return f"gin configuration: {head}{where}{_suggestion(head)}"


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
  """Around calls of gin configurables: gin appends 'In call to configurable X' lines to any error raised
  inside them; an MspError comes out as one line again, naming the configurable when it does not already."""
  try:
    yield
  except MspError as e:
    message = str(e)
    first = message.strip().splitlines()[0] if message.strip() else type(e).__name__
    called = _CALL_LOCATION.search(message)
    if called and called["name"] not in first:
      first = f"{first} (in gin configurable {called['name']})"
    # gin re-raises a proxy subclass; rebuild the plain error class so the message is exactly `first`.
    cls = next((c for c in (CheckpointError, DataError, ConfigError) if isinstance(e, c)), MspError)
    raise cls(first) from None
  except TypeError as e:  # e.g. `TrainConfig.steps = '3'` fails at `steps < 1` in __post_init__
    called = _CALL_LOCATION.search(str(e))
    wrong = _mistyped_binding(called["name"]) if called else None
    if wrong is None:
      raise  # not a binding of the wrong type: a bug, keep the traceback
    raise ConfigError(wrong) from None


_SIMPLE_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool}


def _mistyped_binding(configurable: str) -> str | None:
  """'TrainConfig.steps='3' must be int' for the first binding of a dataclass field of the wrong simple type."""
  try:
    wrapped = gin.config._REGISTRY.get_match(configurable).wrapped  # pylint: disable=protected-access
    fields = {f.name: f.type for f in dataclasses.fields(wrapped)}
    bindings = gin.get_bindings(configurable)
  except Exception:  # pylint: disable=broad-except
    return None
  for name, value in bindings.items():
    annotation = fields.get(name)
    expected = _SIMPLE_TYPES.get(annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""))
    if expected and (not isinstance(value, expected) or (isinstance(value, bool) and annotation != "bool")):
      return f"gin binding {configurable}.{name}={value!r} must be {annotation}"
  return None


def _where(filename: str | None, line: int, source: str | None) -> str:
  """'(file X, line N: <text>)' or '(--gin binding: <text>)' for bindings (gin counts them as lines)."""
  source = (source or "").strip()
  if filename:
    return f"(file {filename}, line {line}{': ' + source if source else ''})"
  return f"(--gin binding{': ' + source if source else f' #{line}'})"


def _suggestion(head: str) -> str:
  """'; did you mean ...' for an unknown parameter or configurable, from what gin has registered."""
  unknown = _UNKNOWN_PARAMETER.search(head)
  if unknown:
    names = _parameters_of(unknown["configurable"])
    if names:
      close = difflib.get_close_matches(unknown["parameter"], names, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      return f"{hint} ({unknown['configurable']} takes: {', '.join(names)})"
    return ""
  unknown = _UNKNOWN_CONFIGURABLE.search(head)
  if unknown:
    close = difflib.get_close_matches(unknown["name"].strip(), _configurable_names(), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
  return ""


def _parameters_of(selector: str) -> list[str]:
  try:  # gin has no public registry lookup; a hint is optional, so any failure just drops it.
    configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
    return [p for p in inspect.signature(configurable.wrapped).parameters if p != "self"]
  except Exception:  # pylint: disable=broad-except
    return []


def _configurable_names() -> list[str]:
  try:
    return [selector for selector, _ in gin.config._REGISTRY.items()  # pylint: disable=protected-access
            if not selector.startswith("gin.")]
  except Exception:  # pylint: disable=broad-except
    return []


class _DropPathNotFound(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_include_probes() -> Iterator[None]:
  """gin's package-resource reader logs 'ERROR Path not found' for every `include` it then finds on the
  search path (gin_configs/); those records are noise, not errors."""
  root = logging.getLogger()
  quiet = _DropPathNotFound()
  root.addFilter(quiet)
  try:
    yield
  finally:
    root.removeFilter(quiet)
