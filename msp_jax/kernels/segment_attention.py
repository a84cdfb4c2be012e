"""Self-attention over packed sequences on the CPU, as an XLA FFI custom call (`segment_attention.cc`).

Many short sequences laid end to end in one token axis, with no padding between them:

  qkv    [tokens, 3 * heads * head_dim]  per token: queries, keys, values, each head-major (what one fused
                                         [hidden, 3 hidden] dense layer gives)
  starts [sequences + 1] int32           sequence s is tokens starts[s] .. starts[s + 1] - 1; tokens from
                                         starts[-1] on are padding (their output is 0); empty sequences allowed
  ->     [tokens, heads * head_dim]      softmax(q k^T / sqrt(head_dim)) v within each sequence (bidirectional)

An encoder on this layout runs its dense layers on one [tokens, hidden] matrix with no padded rows, and its
attention without XLA's per-[sequence, head] batched-matmul overheads or head-major transposes. Head sizes
16, 32 and 64; float32. Built and registered by `library`; callers check `available()` and keep a padded
XLA path otherwise. Inference-only (no gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.kernels import library

TARGET = "msp_segment_attention"
HEAD_DIMS = (16, 32, 64)


def available() -> bool:
  """Whether the kernel is built and registered."""
  return library.has_target(TARGET)


def unavailable_reason() -> str | None:
  return library.unavailable_reason()


def attention(qkv: jax.Array, starts: jax.Array, num_heads: int) -> jax.Array:
  """qkv [tokens, 3 H D] float32, starts [S + 1] int32 -> [tokens, H D] float32 (see the module docstring).

  Callers check `available()` first (this raises if the kernel is not registered).
  """
  if not available():
    raise RuntimeError(f"the CPU attention kernel is unavailable: {unavailable_reason()}")
  tokens, width = qkv.shape
  if width % (3 * num_heads) or width // (3 * num_heads) not in HEAD_DIMS or starts.ndim != 1:
    raise ValueError(f"segment_attention.attention: qkv {qkv.shape} with {num_heads} heads and starts "
                     f"{starts.shape} do not fit (expected qkv [T, 3 H D] with D in {HEAD_DIMS}, starts [S + 1])")
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((tokens, width // 3), jnp.float32))
  return call(qkv.astype(jnp.float32), starts.astype(jnp.int32), num_heads=np.int64(num_heads))
