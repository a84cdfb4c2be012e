"""Builds, caches and loads msp-jax's CPU kernels: XLA FFI custom calls written in C++ (this folder's `.cc`
files), compiled into one shared library and registered with XLA's CPU backend.

  small_m_matmul.cc     `msp_small_m_matmul`: few rows against panel-packed weights (the decode step);
                        used through `cpu_matmul`.
  segment_attention.cc  `msp_segment_attention`: self-attention over packed sequences (the denoiser's
                        sentence encoder); used through `segment_attention`.
  bf16_matmul.cc        `msp_bf16_matmul`: bfloat16 x panel-packed bfloat16 weights, float32 out (the
                        denoiser's dense layers); built only for CPUs with AVX512-BF16; through `bf16_matmul`.

The sources are compiled on first use (or by `python -m msp_jax.kernels.library`, which `scripts/setup.sh`
runs) with the system's C++ compiler and `-march=native`, into a cache folder (`$MSP_KERNEL_CACHE`, default
`~/.cache/msp_jax/kernels`, or the system's temporary folder when that cannot be created) under a name that
hashes the sources, the jaxlib version, the compiler command and this CPU's feature flags, so a stale or
foreign build is never loaded. The build is atomic (temporary file + rename). Where there is no compiler, or
`MSP_CPU_KERNELS=0`, `available()` is False and every caller keeps its pure-XLA path (same numbers up to
float32 round-off).

The custom calls are inference-only: they have no gradient and are not partitioned over a mesh.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import jax

from msp_jax import runtime

FOLDER = pathlib.Path(__file__).resolve().parent
SOURCES = (FOLDER / "small_m_matmul.cc", FOLDER / "segment_attention.cc", FOLDER / "bf16_matmul.cc")
HEADERS = (FOLDER / "parallel_for.h",)
# XLA target name -> the handler symbol the library exports for it.
TARGETS = {"msp_small_m_matmul": "MspSmallMMatmul", "msp_segment_attention": "MspSegmentAttention"}
# Targets built only for some CPUs: target -> (handler symbol, the exported function that says whether it is).
OPTIONAL_TARGETS = {"msp_bf16_matmul": ("MspBf16Matmul", "MspHasBf16Matmul")}
FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-shared", "-fPIC", "-w", "-Wno-psabi")

_log = logging.getLogger(__name__)
_state: dict[str, object] = {}  # "available": bool once decided, "library": the loaded CDLL, "error": why not


def _compiler() -> str | None:
  """$CXX if set (it must exist), else the first of c++, g++, clang++ on PATH."""
  if os.environ.get("CXX"):
    return shutil.which(os.environ["CXX"])
  return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def cache_dir() -> pathlib.Path:
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "msp_jax" / "kernels"
  return pathlib.Path(os.environ.get("MSP_KERNEL_CACHE", default))


def library_path(compiler: str) -> pathlib.Path:
  import jaxlib

  # A -march=native build is only valid on a CPU with the same feature flags.
  texts = [path.read_text() for path in (*SOURCES, *HEADERS)]
  key = hashlib.sha256("\n".join([*texts, jaxlib.__version__, compiler, " ".join(FLAGS), platform.machine(),
                                  *sorted(runtime.cpu_flags())]).encode()).hexdigest()[:16]
  return cache_dir() / f"msp_jax_kernels-{key}.so"


def build(force: bool = False) -> pathlib.Path:
  """Compiles the kernels (unless a matching build is cached) and returns the library's path.

  Raises RuntimeError naming the compiler and its first error lines when it cannot.
  """
  compiler = _compiler()
  if compiler is None:
    wanted = f"$CXX={os.environ['CXX']!r}" if os.environ.get("CXX") else "c++, g++ or clang++ on PATH"
    raise RuntimeError(f"no C++ compiler found ({wanted})")
  path = library_path(compiler)
  if path.is_file() and not force:
    return path
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError:  # A read-only home: build under the system's temporary folder instead.
    path = pathlib.Path(tempfile.gettempdir()) / "msp_jax_kernels" / path.name
    if path.is_file() and not force:
      return path
    path.parent.mkdir(parents=True, exist_ok=True)
  # Compile to a temporary name in the same folder, then rename: a concurrent or killed build never leaves a
  # partial library under the final name.
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".so.tmp", delete=False) as tmp:
    tmp_path = pathlib.Path(tmp.name)
  try:
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", *map(str, SOURCES), "-o", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      first = "\n".join((result.stderr or result.stdout).strip().splitlines()[:5])
      names = " ".join(source.name for source in SOURCES)
      raise RuntimeError(f"{' '.join(command[:2])} ... {names} failed (exit {result.returncode}):\n{first}")
    os.replace(tmp_path, path)
  finally:
    tmp_path.unlink(missing_ok=True)
  return path


def available() -> bool:
  """Whether the kernels are built, loaded and registered with XLA (decided once per process)."""
  if "available" in _state:
    return bool(_state["available"])
  _state["available"] = False
  if os.environ.get("MSP_CPU_KERNELS", "1") == "0":
    _state["error"] = "disabled by MSP_CPU_KERNELS=0"
    return False
  try:
    library = ctypes.cdll.LoadLibrary(str(build()))
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    optional = set()
    for target, (symbol, built) in OPTIONAL_TARGETS.items():
      if getattr(library, built)():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
        optional.add(target)
  except (RuntimeError, OSError, AttributeError) as e:
    _state["error"] = str(e)
    _log.warning("msp-jax's CPU kernels are unavailable, using XLA's own ops instead: %s", e)
    return False
  _state.update(available=True, library=library, optional=optional)
  return True


def has_target(target: str) -> bool:
  """Whether `target` is registered: every one of TARGETS where `available()`, an OPTIONAL_TARGETS entry only
  where this CPU could build it."""
  return available() and (target in TARGETS or target in _state.get("optional", ()))


def unavailable_reason() -> str | None:
  return None if available() else str(_state.get("error"))


def main(argv: list[str] | None = None) -> int:
  """`python -m msp_jax.kernels.library [--force]`: build (or find) the kernels and say where they are."""
  try:
    path = build(force="--force" in (argv if argv is not None else sys.argv[1:]))
  except RuntimeError as e:
    print(f"msp-jax CPU kernels not built ({e}); msp-jax falls back to XLA's own ops", file=sys.stderr)
    return 0  # Optional speed-ups: a machine without a compiler still works.
  print(f"msp-jax CPU kernels: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
