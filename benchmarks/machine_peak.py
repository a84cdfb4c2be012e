"""The machine's matmul peak, measured in the benchmark's own process (shared by the benchmarks)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from msp_jax.kernels import bf16_matmul


def measure_peak(repeats: int, size: int = 2048, dtype: str = "float32") -> list[float]:
  """GFLOP/s of `repeats` jitted [size, size] x [size, size] matmuls on `dtype` inputs (float32 out): the
  faster of XLA's dot and, for bfloat16 where it is built, msp-jax's CPU bfloat16 kernel (what the denoiser's
  encoder runs), each call timed on its own."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  rates = _rates(dot, a, b, repeats, size)
  if dtype == "bfloat16" and bf16_matmul.available():
    zeros = jnp.zeros(size, jnp.float32)
    kernel = jax.jit(lambda a, b: bf16_matmul.matmul(a, b, zeros))
    rates = [max(x, y) for x, y in zip(rates, _rates(kernel, a, bf16_matmul.pack(b), repeats, size))]
  return rates


def _rates(dot, a, b, repeats: int, size: int) -> list[float]:
  dot(a, b).block_until_ready()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
  return rates
