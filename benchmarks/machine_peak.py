"""The machine's float32 matmul peak, measured in the benchmark's own process (shared by the benchmarks)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def measure_peak(repeats: int, size: int = 2048) -> list[float]:
  """f32 GFLOP/s of `repeats` jitted [size, size] x [size, size] jnp.dot calls."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
  return rates
