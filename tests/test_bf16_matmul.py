"""`msp_jax.kernels.bf16_matmul`: the AVX512-BF16 matmul custom call against float64 NumPy on the same
bfloat16-rounded inputs, its weight layout, and its users: the sentence encoder and the bfloat16 sampling
layout of the Llama backbone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax import runtime
from msp_jax.backbones import llama, load_backbone
from msp_jax.encoders import SentenceEncoder, bert, precision
from msp_jax.errors import ConfigError
from msp_jax.kernels import bf16_matmul
from msp_jax.synthesis import decoding

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


@pytest.fixture(scope="module")
def tiny_llama():
  # vocab 300: the output kernel's last panel is partly padding.
  config = dataclasses.replace(llama.LLAMA_CONFIGS["tiny"], vocab_size=300, tie_embeddings=True)
  return llama.LlamaBackbone(config, llama.init_params(config, jax.random.key(7)), tokenizer=None, name="tiny")


@needs_kernel
def test_bfloat16_sampling_layout_decodes_like_xla_bfloat16_dots(tiny_llama):
  """`inference_params(..., 'bfloat16')`: every kernel in the AVX512-BF16 panels; prefill and decode steps
  give the logits of XLA's dot on the same bfloat16 weights (same rounding, float32 sums in another order)."""
  backbone = tiny_llama
  packed = backbone.inference_params(backbone.params, "bfloat16")
  assert packed["layers_0"]["mlp"]["wi"]["kernel"].ndim == 4
  assert packed["logits_dense"]["kernel"].shape == (10, backbone.embed_dim // 2, 32, 2)
  assert packed["token_embedder"]["embedding"].dtype == jnp.float32  # the lookup table stays as it is
  xla = backbone.fused_params(backbone.params, "bfloat16")
  embeds = jax.random.normal(jax.random.key(4), (3, 70, backbone.embed_dim))  # 210 prefill rows
  mask = jnp.ones((3, 70), jnp.int32).at[0, :4].set(0)
  init = jax.jit(backbone.init_decode, static_argnums=3)
  (xla_logits, xla_cache), (ours, our_cache) = init(xla, embeds, mask, 6), init(packed, embeds, mask, 6)
  scale = float(jnp.abs(xla_logits).max())
  np.testing.assert_allclose(ours, xla_logits, atol=1e-4 * scale)
  step = jax.jit(backbone.decode_step)
  tokens = jnp.asarray([5, 77, 299], jnp.int32)
  np.testing.assert_allclose(step(packed, our_cache, tokens)[0], step(xla, xla_cache, tokens)[0],
                             atol=1e-4 * scale)
  # And bfloat16 stays close to float32 (a coarse check: inputs lose 8 mantissa bits).
  exact, _ = init(backbone.params, embeds, mask, 6)
  np.testing.assert_allclose(ours, exact, atol=0.05 * scale)
  out, _ = decoding.sample(backbone, packed, embeds[:, :9], mask[:, :9], jax.random.key(0), max_new_tokens=5,
                           greedy=True, eos_id=None, pad_id=0)
  assert out.shape == (3, 5) and int(out.max()) < backbone.vocab_size


def test_bfloat16_sampling_layout_falls_back_to_xla_without_the_kernel(tiny_llama, monkeypatch):
  monkeypatch.setattr(bf16_matmul, "available", lambda: False)
  params = tiny_llama.inference_params(tiny_llama.params, "bfloat16")
  kernel = params["layers_0"]["mlp"]["wi"]["kernel"]
  assert kernel.ndim == 2 and kernel.dtype == jnp.bfloat16
  with pytest.raises(ConfigError, match=r"needs its CPU matmul kernel"):
    tiny_llama.fused_params(tiny_llama.params, "bfloat16", pack=True)
  with pytest.raises(ConfigError, match=r"weights_dtype='float16': expected one of float32, bfloat16"):
    tiny_llama.inference_params(tiny_llama.params, "float16")


def test_t5_sampling_on_bfloat16_weights_is_refused_in_one_line():
  backbone = load_backbone("random:t5-tiny").backbone
  assert backbone.inference_params(backbone.params) is backbone.params
  with pytest.raises(ConfigError, match=r"T5 backbones sample in float32; bind "
                                        r"msp.SamplingConfig.weights_dtype = 'float32'"):
    backbone.inference_params(backbone.params, "bfloat16")
