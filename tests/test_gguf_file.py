"""The GGUF container reader (`gguf_file`) against the `gguf` package's own reader, on files written with
`gguf.GGUFWriter` (every metadata type, plain and quantised tensors, random contents each run) and on the real
SmolLM2 file; damaged files are one CheckpointError naming the file."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from msp_jax.backbones import gguf_checkpoint, gguf_file
from msp_jax.errors import CheckpointError


def _assert_same_as_the_gguf_package(path) -> gguf_file.GgufFile:
  ours, theirs = gguf_file.read(path), gguf.GGUFReader(str(path))
  keys = [key for key in theirs.fields if not key.startswith("GGUF.")]
  assert list(ours.fields) == keys
  for key in keys:
    expected, got = theirs.fields[key].contents(), ours.fields[key]
    if isinstance(expected, float) or (isinstance(expected, list) and expected and isinstance(expected[0], float)):
      np.testing.assert_array_equal(np.float64(got), np.float64(expected), err_msg=key)
    else:
      assert got == expected, key
  assert len(ours.tensors) == len(theirs.tensors)
  for mine, ref in zip(ours.tensors, theirs.tensors):
    assert (mine.name, mine.tensor_type, mine.shape) == (ref.name, int(ref.tensor_type), tuple(ref.shape.tolist()))
    assert mine.data.dtype == ref.data.dtype and mine.data.shape == ref.data.shape, mine.name
    np.testing.assert_array_equal(mine.data, ref.data, err_msg=mine.name)
  return ours


def _write_random_file(path, rng: np.random.Generator, alignment: int | None = None) -> None:
  writer = gguf.GGUFWriter(str(path), "llama")
  if alignment is not None:
    writer.add_custom_alignment(alignment)
  writer.add_uint8("t.u8", int(rng.integers(0, 256)))
  writer.add_int8("t.i8", int(rng.integers(-128, 128)))
  writer.add_uint16("t.u16", int(rng.integers(0, 2**16)))
  writer.add_int16("t.i16", int(rng.integers(-2**15, 2**15)))
  writer.add_uint32("t.u32", int(rng.integers(0, 2**32)))
  writer.add_int32("t.i32", int(rng.integers(-2**31, 2**31)))
  writer.add_uint64("t.u64", int(rng.integers(0, 2**63)))
  writer.add_int64("t.i64", int(rng.integers(-2**63, 2**63)))
  writer.add_float32("t.f32", float(rng.normal()))
  writer.add_float64("t.f64", float(rng.normal()))
  writer.add_bool("t.bool", bool(rng.integers(0, 2)))
  writer.add_string("t.text", "héllo " + "".join(rng.choice(list("abcdé€ 😀"), 9)))
  writer.add_array("t.strings", ["".join(rng.choice(list("xyzĠ\n"), int(n))) for n in rng.integers(0, 6, 50)])
  writer.add_array("t.ints", [int(v) for v in rng.integers(-1000, 1000, 40)])
  writer.add_array("t.floats", [float(v) for v in rng.normal(size=7)])
  writer.add_array("t.one", [3])
  writer.add_tensor("plain.f32", rng.normal(size=(3, 5)).astype(np.float32))
  writer.add_tensor("plain.f16", rng.normal(size=(4, 6)).astype(np.float16))
  writer.add_tensor("plain.vector", rng.normal(size=(17,)).astype(np.float32))
  for qtype in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0):
    q = gguf.quants.quantize(rng.normal(size=(3, 64)).astype(np.float32), qtype)
    writer.add_tensor(f"quantised.{qtype.name}", q, raw_shape=q.shape, raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.mark.parametrize("alignment", [None, 64])
def test_every_metadata_type_and_tensor_reads_as_the_gguf_package_does(tmp_path, alignment):
  _write_random_file(tmp_path / "random.gguf", np.random.default_rng(), alignment)
  ours = _assert_same_as_the_gguf_package(tmp_path / "random.gguf")
  assert ours.version == 3 and ours.fields["t.one"] == [3] and len(ours.fields["t.strings"]) == 50
  assert not ours.tensors[0].data.flags.writeable


def test_the_smollm2_file_reads_as_the_gguf_package_does():
  ours = _assert_same_as_the_gguf_package(gguf_checkpoint.smollm2_gguf_path())
  assert len(ours.fields["tokenizer.ggml.tokens"]) == 49152 and len(ours.tensors) == 272


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-40], "runs past the end of the file"),  # into the last tensor, past its padding
    (lambda data: data[:200], "past the end of the file|ends inside"),
    (lambda data: data[:10], "shorter than the 24-byte header"),
    (lambda data: b"GGUG" + data[4:], "starts with b'GGUG'"),
    (lambda data: data[:4] + struct.pack("<I", 7) + data[8:], "version 7"),
    (lambda data: data[:4] + struct.pack(">I", 3) + data[8:], "a big-endian file"),
])
def test_a_damaged_file_is_one_checkpoint_error_naming_it(tmp_path, damage, message):
  _write_random_file(tmp_path / "whole.gguf", np.random.default_rng(0))
  (tmp_path / "bad.gguf").write_bytes(damage((tmp_path / "whole.gguf").read_bytes()))
  with pytest.raises(CheckpointError, match=rf"bad.gguf: not a readable GGUF file, corrupt or truncated \(.*({message})") as e:
    gguf_file.read(tmp_path / "bad.gguf")
  assert "\n" not in str(e.value)


def test_a_missing_file_is_named():
  with pytest.raises(CheckpointError, match="nothere.gguf does not exist"):
    gguf_file.read("nothere.gguf")
