"""A CPU matmul for few rows against a big weight matrix: the decode-step matmul, as an XLA FFI custom call.

At decode batch sizes each weight is used for only a handful of multiply-adds, so a decode step costs what
streaming the weights from memory costs. XLA's CPU dot reaches about half of this machine's memory bandwidth
there; `small_m_matmul.cc` reaches nearly all of it (measured in `benchmarks/decode.py`). It needs the weight
matrix in *panels* of 32 columns, `[panels, in, 32]`, so that each panel is one contiguous stream:

  packed = pack(kernel)                    # kernel [in, out] -> [ceil(out / 32), in, 32], zero-padded
  y = matmul(x, packed, out_features)      # x [..., in] -> [..., out], float32

`library` compiles and registers the C++ source (with the other kernels of this folder). Where there is no
compiler, or `MSP_CPU_KERNELS=0`, `available()` is False and callers keep XLA's dot (same numbers up to float32
round-off).

The custom call is inference-only: it has no gradient and is not partitioned over a mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.kernels import library

PANEL = 32
TARGET = "msp_small_m_matmul"


def available() -> bool:
  """Whether the kernel is built and registered."""
  return library.has_target(TARGET)


def unavailable_reason() -> str | None:
  return library.unavailable_reason()


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
    raise RuntimeError(f"the CPU matmul kernel is unavailable: {unavailable_reason()}")
  panels, k_dim, width = packed.shape
  if width != PANEL or x.shape[-1] != k_dim or packed.dtype != jnp.float32:
    raise ValueError(f"cpu_matmul.matmul: x {x.shape} and packed {packed.shape} {packed.dtype} do not fit "
                     f"(expected x [..., K], packed [P, K, {PANEL}] float32)")
  rows = int(np.prod(x.shape[:-1], dtype=np.int64))
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows, panels * PANEL), jnp.float32))
  out = call(x.reshape(rows, k_dim).astype(jnp.float32), packed)
  return out[:, :out_features].reshape(x.shape[:-1] + (out_features,))
