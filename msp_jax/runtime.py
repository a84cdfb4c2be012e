"""Process-level settings for CPU runs, and what the CPU can do. Call the settings first thing in an entry
point, before JAX runs anything.

XLA's CPU runtime allocates each jitted call's scratch memory afresh (one block: about 2.5 GB for a SmolLM2
prompt-training step at batch 8) and frees it at the end. glibc serves such a block with a fresh `mmap` and
returns it with `munmap`, so every step page-faults its whole scratch in again: about 650k faults, over a
second of kernel time per step on a 2-core machine, 20% of the step. `reuse_freed_memory` makes glibc keep
freed memory and hand it out again instead.

The price is that the heap only grows: a long process that runs many kinds of work (`msp experiment` trains,
samples, encodes and fine-tunes, cell after cell) holds the high-water mark of all of them, fragmented (18 GB
after 44 stages on a 24 GB machine, measured). `release_freed_memory` hands the free pages back to the system
between stages; within a stage the steps keep reusing their scratch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def reuse_freed_memory() -> bool:
  """One glibc malloc arena, no `mmap` for large blocks, no trimming: freed memory is reused, never returned.

  Every thread then allocates from the main heap, so a block freed at the end of one jitted call is handed
  to the next one without page faults. The process keeps its peak footprint (what a training or sampling
  loop needs again at its next step anyway). Must run before JAX starts its threads (before the first
  computation): threads that already own a malloc arena keep it. Returns False (and changes nothing) where
  malloc is not glibc's.
  """
  mallopt = _glibc_function("mallopt")
  if mallopt is None:
    return False
  # glibc documents -1 as "never trim"; mallopt returns 1 on success.
  return all(mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def release_freed_memory() -> bool:
  """Returns the free pages of glibc's heap to the system (`malloc_trim(0)`: whole free pages anywhere in
  the heap, not only at its top), e.g. between the stages of a long run under `reuse_freed_memory`. Memory in
  use is untouched. Returns whether anything was released (False where malloc is not glibc's)."""
  malloc_trim = _glibc_function("malloc_trim")
  return malloc_trim is not None and malloc_trim(0) == 1


def _glibc_function(name: str):
  """The C library's function `name` on Linux, None where there is no such function (not glibc)."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
  except (OSError, AttributeError):
    return None


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (SeqIO and the TFRecord export use it) without its C++ start-up banner on stderr.

  TensorFlow prints INFO lines (oneDNN on, no CUDA driver) before its absl logging is initialised, where no
  environment variable silences them. They are captured here instead; if the import fails they are shown
  with the error.
  """
  if "tensorflow" in sys.modules:
    return
  import os
  import tempfile

  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def cpu_flags() -> frozenset[str]:
  """This CPU's feature flags (`/proc/cpuinfo`: x86 `flags`, Arm `Features`); empty where unreadable."""
  import pathlib

  try:
    info = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return frozenset()
  return frozenset(word for line in info.splitlines() if line.startswith(("flags", "Features"))
                   for word in line.split(":", 1)[-1].split())
