"""`bfloat16_matmul`: a float32 activation times a bfloat16 weight, summed in float32, with a gradient whose
matmuls read bfloat16 too. The building block of mixed-precision training on frozen or trained weights.

Forward: y = bf16(x) @ W in float32. Backward, from the float32 gradient g of y:

  dx = bf16(g) @ W^T      (float32 sums; what prompt training needs to reach the soft prompts)
  dW = bf16(x)^T @ bf16(g) (float32 sums, returned as W's dtype; `astype`'s own gradient widens it to the
                            float32 master weights when W is a cast of them)

So all three matmuls of a layer run at the bfloat16 dot rate (about twice float32's on CPUs with AVX512-BF16,
and the native rate on TPU and GPU), while norms, softmax, residuals, optimizer state and the loss stay
float32. Rounding g to bfloat16 is what T5X and PyTorch autocast do in the backward pass. Where the weight is
frozen (never differentiated), XLA drops the dW matmul.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def bfloat16_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., in] float32 @ kernel [in, out] bfloat16 -> [..., out] float32 (module docstring)."""
  return jnp.dot(x.astype(jnp.bfloat16), kernel, preferred_element_type=jnp.float32)


def _forward(x: jax.Array, kernel: jax.Array):
  x16 = x.astype(jnp.bfloat16)
  return jnp.dot(x16, kernel, preferred_element_type=jnp.float32), (x16, kernel)


def _backward(residuals, grad):
  x16, kernel = residuals
  g16 = grad.astype(jnp.bfloat16)
  dx = jnp.dot(g16, kernel.T, preferred_element_type=jnp.float32)
  dkernel = jnp.dot(x16.reshape(-1, x16.shape[-1]).T, g16.reshape(-1, g16.shape[-1]),
                    preferred_element_type=jnp.float32)
  return dx, dkernel.astype(kernel.dtype)


bfloat16_matmul.defvjp(_forward, _backward)
