"""A fast reader of the GGUF container (llama.cpp's file format): metadata as Python values, tensors as NumPy
views of a memory map.

The layout (little-endian, versions 2 and 3):

  magic b"GGUF" | version u32 | tensor count u64 | metadata count u64
  metadata:     key (u64 length + UTF-8) | value type u32 | value   (arrays: item type u32, count u64, items)
  tensor infos: name | n_dims u32 | dims u64 x n_dims (innermost first) | ggml type u32 | offset u64
  padding to `general.alignment` (default 32), then the tensor data, each tensor at its offset.

The `gguf` package's `GGUFReader` reads the same layout but builds a NumPy view per metadata item; on
SmolLM2's 49,152 tokens and 48,900 merges that took about 6 s per open. Here the metadata region is parsed
with `struct` from one bytes object (well under a second), and only tensor data stays memory-mapped.
Dequantisation is left to `gguf.quants`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct
from typing import Any

import numpy as np

from msp_jax.errors import CheckpointError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_HEADER = struct.Struct("<4sIQQ")
# GGUFValueType -> struct format of one scalar (8: string, 9: array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# ggml types stored as plain NumPy items (the others are blocks of bytes for `gguf.quants`).
_PLAIN_TYPES = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32, 27: np.int64,
                28: np.float64}


@dataclasses.dataclass(frozen=True)
class GgufTensor:
  """One tensor: `shape` innermost-first as GGUF lists it; `data` a read-only view of the file.

  data: [*reversed(shape)] of the plain dtype for float/int types, or [*reversed(shape)[:-1], row bytes]
  uint8 for block-quantised types (the layout `gguf.quants.dequantize` takes).
  """

  name: str
  tensor_type: int
  shape: tuple[int, ...]
  data: np.ndarray


@dataclasses.dataclass(frozen=True)
class GgufFile:
  """A parsed GGUF file: `fields` maps metadata keys to str / int / float / bool or lists of them."""

  path: pathlib.Path
  version: int
  fields: dict[str, Any]
  tensors: tuple[GgufTensor, ...]


class _Cursor:
  """Reads little-endian GGUF values from a buffer, raising ValueError past its end."""

  _U64 = struct.Struct("<Q")

  def __init__(self, buffer: memoryview, offset: int = 0):
    self.buffer, self.offset = buffer, offset

  def items(self, fmt: str, count: int = 1) -> tuple:
    """`count` scalars of struct format `fmt` (one letter)."""
    size = struct.calcsize(f"<{count}{fmt}")
    if self.offset + size > len(self.buffer):
      raise ValueError(f"the file ends inside a value at byte {self.offset}")
    values = struct.unpack_from(f"<{count}{fmt}", self.buffer, self.offset)
    self.offset += size
    return values

  def scalar(self, fmt: str) -> Any:
    return self.items(fmt)[0]

  def string(self) -> str:
    if self.offset + 8 > len(self.buffer):
      raise ValueError(f"the file ends inside a string length at byte {self.offset}")
    (length,) = self._U64.unpack_from(self.buffer, self.offset)
    start, end = self.offset + 8, self.offset + 8 + length
    if end > len(self.buffer):
      raise ValueError(f"a string of {length} bytes at byte {start} runs past the end of the file")
    self.offset = end
    return str(self.buffer[start:end], "utf-8", "replace")

  def value(self, value_type: int) -> Any:
    if value_type == _STRING:
      return self.string()
    if value_type == _ARRAY:
      item_type, count = self.scalar("I"), self.scalar("Q")
      if item_type in _SCALARS:  # one struct call for the whole array
        return list(self.items(_SCALARS[item_type], count))
      return [self.value(item_type) for _ in range(count)]
    if value_type not in _SCALARS:
      raise ValueError(f"unknown metadata value type {value_type} at byte {self.offset}")
    return self.scalar(_SCALARS[value_type])


def _byte_shape(shape: tuple[int, ...], tensor_type: int) -> tuple[tuple[int, ...], Any]:
  """GGUF shape (innermost first) -> (NumPy shape, dtype) of the tensor's stored bytes."""
  numpy_shape = tuple(reversed(shape))
  if tensor_type in _PLAIN_TYPES:
    return numpy_shape, _PLAIN_TYPES[tensor_type]
  from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

  try:
    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(tensor_type)]
  except (ValueError, KeyError):
    raise ValueError(f"unknown ggml tensor type {tensor_type}") from None
  if numpy_shape[-1] % block:
    raise ValueError(f"a row of {numpy_shape[-1]} values is not a whole number of {block}-value blocks")
  return (*numpy_shape[:-1], numpy_shape[-1] // block * block_bytes), np.uint8


def read(path: str | pathlib.Path) -> GgufFile:
  """Parses a GGUF file (CheckpointError naming the file when it is missing, not GGUF, or cut short)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"GGUF file {path} does not exist (expected a llama.cpp .gguf file)")
  try:
    return _read(path)
  except (ValueError, struct.error, OverflowError, MemoryError) as e:
    raise CheckpointError(f"{path}: not a readable GGUF file, corrupt or truncated ({e})") from None


def _read(path: pathlib.Path) -> GgufFile:
  mapped = np.memmap(path, mode="r")
  if mapped.size < _HEADER.size:
    raise ValueError(f"{mapped.size} bytes is shorter than the {_HEADER.size}-byte header")
  magic, version, tensor_count, field_count = _HEADER.unpack_from(mapped[:_HEADER.size].tobytes())
  if magic != MAGIC:
    raise ValueError(f"the file starts with {magic!r}, not {MAGIC!r}")
  if version not in VERSIONS:
    swapped = struct.unpack("<I", struct.pack(">I", version))[0]
    kind = "a big-endian file" if swapped in VERSIONS else f"version {version}"
    raise ValueError(f"{kind}; only little-endian GGUF versions {VERSIONS} are read")
  cursor = _Cursor(memoryview(mapped), _HEADER.size)
  fields: dict[str, Any] = {}
  for _ in range(field_count):
    key = cursor.string()
    fields[key] = cursor.value(cursor.scalar("I"))
  infos = []
  for _ in range(tensor_count):
    name = cursor.string()
    shape = tuple(int(d) for d in cursor.items("Q", cursor.scalar("I")))
    infos.append((name, shape, cursor.scalar("I"), cursor.scalar("Q")))
  alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
  if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
    raise ValueError(f"general.alignment={alignment!r} is not a power of two")
  data_start = -(-cursor.offset // alignment) * alignment
  tensors, names = [], set()
  for name, shape, tensor_type, offset in infos:
    if name in names:
      raise ValueError(f"tensor {name!r} is listed twice")
    names.add(name)
    byte_shape, dtype = _byte_shape(shape, tensor_type)
    start = data_start + offset
    size = int(np.prod(byte_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if start + size > mapped.size:
      raise ValueError(f"tensor {name!r} ({size} bytes at byte {start}) runs past the end of the file "
                       f"({mapped.size} bytes)")
    data = mapped[start:start + size].view(dtype).reshape(byte_shape)
    tensors.append(GgufTensor(name, tensor_type, shape, data))
  return GgufFile(path, version, fields, tuple(tensors))
