"""A CPU matmul for few rows against a big weight matrix: the decode-step matmul, as an XLA FFI custom call.

At decode batch sizes each weight is used for only a handful of multiply-adds, so a decode step costs what
streaming the weights from memory costs. XLA's CPU dot reaches about half of this machine's memory bandwidth
there; `small_m_matmul.cc` reaches nearly all of it (measured in `benchmarks/decode.py`). It needs the weight
matrix in *panels* of 32 columns, `[panels, in, 32]`, so that each panel is one contiguous stream:

  packed = pack(kernel)                    # kernel [in, out] -> [ceil(out / 32), in, 32], zero-padded
  y = matmul(x, packed, out_features)      # x [..., in] -> [..., out], float32

The C++ source is compiled on first use (or by `python -m msp_jax.kernels.cpu_matmul`, which `scripts/setup.sh`
runs) with the system's C++ compiler and `-march=native`, into a cache folder (`$MSP_KERNEL_CACHE`, default
`~/.cache/msp_jax/kernels`) under a name that hashes the source, the jaxlib version, the compiler command and
this CPU's feature flags, so a stale or foreign build is never loaded. Where there is no compiler, or
`MSP_CPU_KERNELS=0`, `available()` is False and callers keep XLA's dot (same numbers up to float32 round-off).

The custom call is inference-only: it has no gradient and is not partitioned over a mesh.
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
import jax.numpy as jnp
import numpy as np

from msp_jax import runtime

PANEL = 32
TARGET = "msp_small_m_matmul"
SOURCE = pathlib.Path(__file__).with_name("small_m_matmul.cc")
FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-shared", "-fPIC", "-w")

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
  key = hashlib.sha256("\n".join([SOURCE.read_text(), jaxlib.__version__, compiler, " ".join(FLAGS),
                                  platform.machine(), *sorted(runtime.cpu_flags())]).encode()).hexdigest()[:16]
  return cache_dir() / f"small_m_matmul-{key}.so"


def build(force: bool = False) -> pathlib.Path:
  """Compiles the kernel (unless a matching build is cached) and returns the library's path.

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
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      first = "\n".join((result.stderr or result.stdout).strip().splitlines()[:5])
      raise RuntimeError(f"{' '.join(command[:2])} ... {SOURCE.name} failed (exit {result.returncode}):\n{first}")
    os.replace(tmp_path, path)
  finally:
    tmp_path.unlink(missing_ok=True)
  return path


def available() -> bool:
  """Whether the kernel is built, loaded and registered with XLA (decided once per process)."""
  if "available" in _state:
    return bool(_state["available"])
  _state["available"] = False
  if os.environ.get("MSP_CPU_KERNELS", "1") == "0":
    _state["error"] = "disabled by MSP_CPU_KERNELS=0"
    return False
  try:
    library = ctypes.cdll.LoadLibrary(str(build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.MspSmallMMatmul), platform="cpu")
  except (RuntimeError, OSError) as e:
    _state["error"] = str(e)
    _log.warning("the CPU decode matmul kernel is unavailable, using XLA's dot instead: %s", e)
    return False
  _state.update(available=True, library=library)
  return True


def unavailable_reason() -> str | None:
  return None if available() else str(_state.get("error"))


def pack(kernel: jax.Array | np.ndarray) -> jax.Array:
  """kernel [in, out] float32 -> panels [ceil(out / 32), in, 32] (zero columns pad the last panel).

  An already packed kernel (3-D, last dimension 32) is returned as it is.
  """
  kernel = jnp.asarray(kernel, jnp.float32)
  if kernel.ndim == 3 and kernel.shape[2] == PANEL:
    return kernel
  k_dim, n_dim = kernel.shape
  panels = -(-n_dim // PANEL)
  kernel = jnp.pad(kernel, ((0, 0), (0, panels * PANEL - n_dim)))
  return kernel.reshape(k_dim, panels, PANEL).transpose(1, 0, 2)


def unpack(packed: jax.Array, out_features: int) -> jax.Array:
  """The inverse of `pack`: panels [P, in, 32] -> kernel [in, out_features]."""
  panels, k_dim, _ = packed.shape
  return packed.transpose(1, 0, 2).reshape(k_dim, panels * PANEL)[:, :out_features]


def matmul(x: jax.Array, packed: jax.Array, out_features: int) -> jax.Array:
  """x [..., in] @ the packed kernel -> [..., out_features] float32, through the custom call.

  Callers check `available()` first (this raises if the kernel is not registered).
  """
  if not available():
    raise RuntimeError(f"the CPU matmul kernel is unavailable: {_state.get('error')}")
  panels, k_dim, width = packed.shape
  if width != PANEL or x.shape[-1] != k_dim or packed.dtype != jnp.float32:
    raise ValueError(f"cpu_matmul.matmul: x {x.shape} and packed {packed.shape} {packed.dtype} do not fit "
                     f"(expected x [..., K], packed [P, K, {PANEL}] float32)")
  rows = int(np.prod(x.shape[:-1], dtype=np.int64))
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows, panels * PANEL), jnp.float32))
  out = call(x.reshape(rows, k_dim).astype(jnp.float32), packed)
  return out[:, :out_features].reshape(x.shape[:-1] + (out_features,))


def main(argv: list[str] | None = None) -> int:
  """`python -m msp_jax.kernels.cpu_matmul`: build (or find) the kernel and say where it is."""
  try:
    path = build(force="--force" in (argv if argv is not None else sys.argv[1:]))
  except RuntimeError as e:
    print(f"msp-jax CPU kernel not built ({e}); decoding falls back to XLA's dot", file=sys.stderr)
    return 0  # Optional speed-up: a machine without a compiler still works.
  print(f"msp-jax CPU decode kernel: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
