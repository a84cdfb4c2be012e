"""A bfloat16 CPU matmul for AVX512-BF16 machines, as an XLA FFI custom call (`bf16_matmul.cc`).

  packed = pack(kernel)                            # [K, N] -> [ceil(N / 32), ceil(K / 2), 32, 2] bfloat16
  y = matmul(x, packed, bias)                      # x [..., K] -> [..., N] float32, = bf16(x) @ bf16(W) + bias

The inputs are rounded to bfloat16 and the products accumulate in float32, the same arithmetic as
`jnp.dot(x.astype(bfloat16), W.astype(bfloat16), preferred_element_type=float32)` up to summation order. The
weights go into 32-column panels with pairs of consecutive rows interleaved, the operand layout of the
VDPBF16PS instruction. Built by `library` only where the compiler targets AVX512-BF16; `available()` says
whether it is. Inference-only (no gradient), not partitioned over a mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.kernels import library

TARGET = "msp_bf16_matmul"
PANEL = 32


def available() -> bool:
  """Whether the kernel is built for this CPU and registered."""
  return library.has_target(TARGET)


def unavailable_reason() -> str | None:
  if available():
    return None
  return library.unavailable_reason() or "this CPU has no AVX512-BF16"


def pack(kernel: jax.Array | np.ndarray) -> jax.Array:
  """kernel [K, N] -> [ceil(N / 32), ceil(K / 2), 32, 2] bfloat16 (zero row / columns pad odd K, ragged N)."""
  kernel = jnp.asarray(kernel).astype(jnp.bfloat16)
  k_dim, n_dim = kernel.shape
  panels, pairs = -(-n_dim // PANEL), -(-k_dim // 2)
  kernel = jnp.pad(kernel, ((0, 2 * pairs - k_dim), (0, panels * PANEL - n_dim)))
  # [2 pairs, 32 panels] -> [pairs, 2, panels, 32] -> [panels, pairs, 32, 2]
  return kernel.reshape(pairs, 2, panels, PANEL).transpose(2, 0, 3, 1)


def matmul(x: jax.Array, packed: jax.Array, bias: jax.Array) -> jax.Array:
  """x [..., K] @ the packed kernel + bias [N] -> [..., N] float32, through the custom call.

  Callers check `available()` first (this raises if the kernel is not registered).
  """
  if not available():
    raise RuntimeError(f"the bfloat16 CPU matmul is unavailable here: {unavailable_reason()}")
  panels, pairs, width, two = packed.shape
  n_dim = bias.shape[0]
  if (width, two) != (PANEL, 2) or packed.dtype != jnp.bfloat16 or not 2 * pairs - 1 <= x.shape[-1] <= 2 * pairs \
      or not (panels - 1) * PANEL < n_dim <= panels * PANEL:
    raise ValueError(f"bf16_matmul.matmul: x {x.shape}, packed {packed.shape} {packed.dtype} and bias {bias.shape} "
                     f"do not fit (expected x [..., K], packed [ceil(N / 32), ceil(K / 2), 32, 2] bfloat16, "
                     f"bias [N])")
  rows = int(np.prod(x.shape[:-1], dtype=np.int64))
  x2 = x.reshape(rows, x.shape[-1]).astype(jnp.bfloat16)
  if x2.shape[1] != 2 * pairs:
    x2 = jnp.pad(x2, ((0, 0), (0, 2 * pairs - x2.shape[1])))
  bias = jnp.pad(bias.astype(jnp.float32), (0, panels * PANEL - n_dim))
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows, panels * PANEL), jnp.float32))
  return call(x2, packed, bias)[:, :n_dim].reshape(x.shape[:-1] + (n_dim,))
