"""`msp_jax.kernels.bf16_matmul`: the AVX512-BF16 matmul custom call against float64 NumPy on the same
bfloat16-rounded inputs, its weight layout, and the sentence encoder's use of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax import runtime
from msp_jax.encoders import SentenceEncoder, bert, precision
from msp_jax.errors import ConfigError
from msp_jax.kernels import bf16_matmul

needs_kernel = pytest.mark.skipif(not bf16_matmul.available(),
                                  reason=f"no CPU bfloat16 matmul here: {bf16_matmul.unavailable_reason()}")


def as_bf16_float64(x: np.ndarray) -> np.ndarray:
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)  # bf16 fits in f32


def test_the_kernel_is_built_wherever_the_cpu_has_bf16_dots():
  assert bf16_matmul.available() == ("avx512_bf16" in runtime.cpu_flags()), bf16_matmul.unavailable_reason()


def test_pack_interleaves_row_pairs_in_32_column_panels():
  w = np.random.default_rng(0).standard_normal((7, 70)).astype(np.float32)
  packed = np.asarray(bf16_matmul.pack(w).astype(jnp.float32))
  assert packed.shape == (3, 4, 32, 2)
  padded = np.zeros((8, 96), np.float32)
  padded[:7, :70] = as_bf16_float64(w)
  for p, k2, j, t in [(0, 0, 0, 0), (0, 0, 0, 1), (1, 2, 5, 1), (2, 3, 5, 0), (2, 3, 31, 1)]:
    assert packed[p, k2, j, t] == padded[2 * k2 + t, 32 * p + j]


@needs_kernel
@pytest.mark.parametrize("rows", [1, 5, 12, 13, 200, 389])
@pytest.mark.parametrize("k_dim,n_dim", [(7, 32), (64, 70), (384, 96)])
def test_matmul_matches_float64_numpy(rows, k_dim, n_dim):
  rng = np.random.default_rng(rows * 1000 + k_dim + n_dim)
  x = rng.standard_normal((rows, k_dim)).astype(np.float32)
  w = rng.standard_normal((k_dim, n_dim)).astype(np.float32)
  bias = rng.standard_normal(n_dim).astype(np.float32)
  got = jax.jit(bf16_matmul.matmul)(x, bf16_matmul.pack(w), bias)
  want = as_bf16_float64(x) @ as_bf16_float64(w) + bias
  assert got.shape == (rows, n_dim) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5 * np.sqrt(k_dim))


@needs_kernel
def test_matmul_keeps_leading_dimensions():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 64)).astype(np.float32)
  w = rng.standard_normal((64, 32)).astype(np.float32)
  got = bf16_matmul.matmul(x, bf16_matmul.pack(w), np.zeros(32, np.float32))
  np.testing.assert_allclose(np.asarray(got), (as_bf16_float64(x.reshape(6, 64)) @ as_bf16_float64(w)).reshape(
      2, 3, 32), rtol=1e-5, atol=1e-4)


@needs_kernel
def test_matmul_rejects_mismatched_shapes():
  packed = bf16_matmul.pack(np.ones((8, 32), np.float32))
  with pytest.raises(ValueError, match=r"do not fit"):
    bf16_matmul.matmul(jnp.ones((2, 9)), packed, jnp.zeros(32))
  with pytest.raises(ValueError, match=r"do not fit"):
    bf16_matmul.matmul(jnp.ones((2, 8)), packed, jnp.zeros(40))


@pytest.mark.slow
@needs_kernel
def test_packed_bf16_encoder_embeds_like_xla_bf16_dots():
  encoder = SentenceEncoder(matmul_dtype="bfloat16")
  assert encoder.compute_params["layers_0"]["mlp"]["wi"]["kernel"].ndim == 4  # packed by default here
  texts = ["Can I check out late, around 1pm?", "Is parking included for two cars and a van?", "wifi"]
  unpacked = precision.matmul_params(encoder.params, "bfloat16", pack=False)
  ids, mask = encoder.tokenize(texts)
  embed = jax.jit(bert.embed_fn, static_argnames="config")
  ours = np.asarray(embed(encoder.compute_params, ids, mask, config=encoder.config))
  xla = np.asarray(embed(unpacked, ids, mask, config=encoder.config))
  assert (ours * xla).sum(1).min() >= 0.99999


def test_packing_is_refused_where_it_cannot_run(monkeypatch):
  params = {"layers_0": {"mlp": {"wi": {"kernel": jnp.ones((4, 32)), "bias": jnp.zeros(32)}}}}
  with pytest.raises(ConfigError, match=r"pack=True needs dtype 'bfloat16' \(got 'float32'\)"):
    precision.matmul_params(params, "float32", pack=True)
  monkeypatch.setattr(bf16_matmul, "available", lambda: False)
  assert precision.matmul_params(params, "bfloat16")["layers_0"]["mlp"]["wi"]["kernel"].ndim == 2
