"""How the BERT encoder's dense layers multiply: the stored kernel's dtype and layout choose the matmul.

A dense kernel is stored in one of three ways, and `dense` picks the matmul from what it finds:

  * float32 [in, out]: XLA's dot in float32 (what `minilm_weights.load_params` returns);
  * bfloat16 [in, out]: XLA's dot on bfloat16 inputs, accumulating in float32;
  * bfloat16 [panels, in / 2, 32, 2]: packed for the CPU bfloat16 matmul (`kernels.bf16_matmul`, AVX512-BF16):
    the same arithmetic through the custom call, at a higher rate than XLA's dot.

`matmul_params` converts a float32 parameter tree to the chosen storage once, before the jitted forward pass;
only the encoder layers' kernels change (embeddings, biases and norms stay float32).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp_jax import runtime
from msp_jax.errors import ConfigError
from msp_jax.mixed_precision import bfloat16_matmul
from msp_jax.kernels import bf16_matmul

MATMUL_DTYPES = ("float32", "bfloat16")


class DenseWeights(nn.Module):
  """The `kernel` [in, out] and `bias` [out] of a dense layer (nn.Dense's tree), returned, not applied. A kernel
  stored packed for the CPU bfloat16 matmul (4-D, `matmul_params`) is returned as stored."""

  features_in: int
  features_out: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    if self.has_variable("params", "kernel") and self.get_variable("params", "kernel").ndim == 4:
      kernel = self.get_variable("params", "kernel")
    else:
      kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.features_in, self.features_out))
    return kernel, self.param("bias", nn.initializers.zeros, (self.features_out,))


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """x [..., in] @ kernel [in, out] + bias, float32 out. A bfloat16 kernel (`matmul_params`) makes the
  matmul read its inputs in bfloat16, accumulating in float32; everything else stays float32. A 4-D kernel is
  one packed for the CPU bfloat16 matmul (`bf16_matmul.pack`): same arithmetic, through the custom call."""
  if kernel.ndim == 4:
    return bf16_matmul.matmul(x, kernel, bias)
  if kernel.dtype == jnp.bfloat16:
    return bfloat16_matmul(x.astype(jnp.float32), kernel) + bias.astype(jnp.float32)  # bfloat16 gradients too
  y = jnp.dot(x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
  return y + bias.astype(jnp.float32)


def concat_kernels(kernels: Sequence[jax.Array]) -> jax.Array:
  """Dense kernels side by side along their output columns: [in, out_i] -> [in, sum out_i]; packed ones
  ([panels, in / 2, 32, 2], whole panels each) along their panels."""
  return jnp.concatenate(kernels, axis=0 if kernels[0].ndim == 4 else 1)


def default_matmul_dtype() -> str:
  """'bfloat16' where matmuls on bfloat16 inputs are native (TPU, GPU, CPUs with AVX512-BF16 or AMX), else
  'float32' (elsewhere XLA would emulate them, slower than float32)."""
  if jax.default_backend() != "cpu":
    return "bfloat16"
  return "bfloat16" if runtime.cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


def matmul_params(params: Any, dtype: str, pack: bool | None = None) -> Any:
  """`params` (the BERT tree) with the encoder layers' 2-D kernels stored in `dtype`; embeddings, biases and
  norms unchanged.

  With 'bfloat16' every dense layer reads its inputs in bfloat16 and accumulates in float32 (`dense`), at
  about twice the float32 matmul rate on CPUs with bfloat16 dot instructions; attention, GELU, LayerNorm,
  residuals and pooling stay float32. Measured here: cosine >= 0.99998 to the float32 embeddings.

  pack: store the bfloat16 kernels packed for the CPU bfloat16 matmul (`bf16_matmul`, AVX512-BF16 CPUs); the
  same arithmetic at a higher rate than XLA's dot. Default: where that kernel is available (and every kernel
  is whole 32-column panels with an even input size, so fused Q/K/V kernels concatenate by panels).
  """
  if dtype not in MATMUL_DTYPES:
    raise ConfigError(f"matmul dtype {dtype!r} is not one of {MATMUL_DTYPES}")
  is_kernel = lambda path, x: x.ndim == 2 and path[0].key.startswith("layers_")
  kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(params) if is_kernel(path, x)]
  packable = all(k.shape[0] % 2 == 0 and k.shape[1] % bf16_matmul.PANEL == 0 for k in kernels)
  can_pack = dtype == "bfloat16" and packable and bf16_matmul.available()
  if pack is None:
    pack = can_pack and jax.default_backend() == "cpu"
  elif pack and not can_pack:
    raise ConfigError(f"matmul_params: pack=True needs dtype 'bfloat16' (got {dtype!r}), kernels of whole "
                      f"32-column panels and the CPU bfloat16 matmul ({bf16_matmul.unavailable_reason()})")
  convert = bf16_matmul.pack if pack else (lambda x: x.astype(dtype))
  return jax.tree_util.tree_map_with_path(lambda path, x: convert(x) if is_kernel(path, x) else x, params)
