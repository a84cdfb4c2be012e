"""The machine's matmul peak, measured in the benchmark's own process (shared by the benchmarks)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def measure_peak(repeats: int, size: int = 2048, dtype: str = "float32") -> list[float]:
  """GFLOP/s of `repeats` jitted [size, size] x [size, size] jnp.dot calls on `dtype` inputs (float32 out)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  dot(a, b).block_until_ready()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
  return rates
