"""`msp_jax.kernels.cpu_matmul`: the CPU decode matmul custom call against float64 NumPy, and the packed
Llama layout that uses it against the plain one; the kernels' build (`msp_jax.kernels.library`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.synthesis import decoding
from msp_jax.backbones import llama
from msp_jax.errors import ConfigError
from msp_jax.kernels import cpu_matmul, library



def test_the_kernel_is_built_here():
  # scripts/setup.sh builds it; every machine this project tests on has a C++ compiler.
  assert cpu_matmul.available(), cpu_matmul.unavailable_reason()


@pytest.mark.parametrize("rows", [1, 3, 8, 13, 64])
@pytest.mark.parametrize("k_dim,n_dim", [(5, 32), (96, 50), (200, 100)])
def test_matmul_matches_float64_numpy(rows, k_dim, n_dim):
  rng = np.random.default_rng(rows * 1000 + k_dim + n_dim)
  x = rng.standard_normal((rows, k_dim)).astype(np.float32)
  w = rng.standard_normal((k_dim, n_dim)).astype(np.float32)
  got = jax.jit(lambda x, p: cpu_matmul.matmul(x, p, n_dim))(x, cpu_matmul.pack(w))
  want = x.astype(np.float64) @ w.astype(np.float64)
  assert got.shape == (rows, n_dim) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5 * np.sqrt(k_dim))


def test_matmul_keeps_leading_dimensions_and_runs_in_a_loop():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 40)).astype(np.float32)
  w = (rng.standard_normal((40, 40)) / 8).astype(np.float32)
  packed = cpu_matmul.pack(w)
  loop = jax.jit(lambda x: jax.lax.fori_loop(0, 5, lambda _, y: jnp.tanh(cpu_matmul.matmul(y, packed, 40)), x))
  want = x.astype(np.float64)
  for _ in range(5):
    want = np.tanh(want @ w)
  np.testing.assert_allclose(np.asarray(loop(x)), want, rtol=1e-5, atol=1e-6)


def test_pack_round_trips_and_is_idempotent():
  w = np.random.default_rng(2).standard_normal((7, 70)).astype(np.float32)
  packed = cpu_matmul.pack(w)
  assert packed.shape == (3, 7, 32)
  np.testing.assert_array_equal(np.asarray(packed)[2, :, 6:], 0)  # The padded columns of the last panel.
  np.testing.assert_array_equal(np.asarray(cpu_matmul.unpack(packed, 70)), w)
  assert cpu_matmul.pack(packed) is packed


def test_matmul_rejects_mismatched_shapes():
  packed = cpu_matmul.pack(np.ones((8, 32), np.float32))
  with pytest.raises(ValueError, match=r"do not fit"):
    cpu_matmul.matmul(jnp.ones((2, 9)), packed, 32)


def test_build_errors_name_the_compiler_and_its_message(tmp_path, monkeypatch):
  monkeypatch.setenv("MSP_KERNEL_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "/no/such/compiler")
  with pytest.raises(RuntimeError, match=r"CXX='/no/such/compiler'"):
    library.build()
  monkeypatch.delenv("CXX")
  broken = tmp_path / "broken.cc"
  broken.write_text("this is not C++\n")
  monkeypatch.setattr(library, "SOURCES", (broken,))  # alone: the real kernels would compile first (~15 s)
  with pytest.raises(RuntimeError, match=r"broken\.cc failed \(exit \d+\):\n(?s:.*)error"):
    library.build()
  assert not list(tmp_path.glob("*.so*"))  # No partial library left behind.


@pytest.fixture(scope="module")
def backbone() -> llama.LlamaBackbone:
  # vocab 300: the output kernel's last panel is partly padding.
  config = dataclasses.replace(llama.LLAMA_CONFIGS["tiny"], vocab_size=300, tie_embeddings=True)
  return llama.LlamaBackbone(config, llama.init_params(config, jax.random.key(3)), tokenizer=None, name="tiny")


def test_packed_layout_decodes_like_the_plain_one(backbone):
  packed = backbone.inference_params(backbone.params)
  assert packed["layers_0"]["mlp"]["wi"]["kernel"].ndim == 3
  assert packed["logits_dense"]["kernel"].shape == (10, 32, 32)
  embeds = jax.random.normal(jax.random.key(4), (3, 9, backbone.embed_dim))
  mask = jnp.ones((3, 9), jnp.int32).at[0, :4].set(0)
  init = jax.jit(backbone.init_decode, static_argnums=3)
  (plain_logits, plain_cache), (packed_logits, packed_cache) = init(backbone.params, embeds, mask, 6), init(
      packed, embeds, mask, 6)
  np.testing.assert_allclose(packed_logits, plain_logits, rtol=1e-5, atol=1e-5)
  step = jax.jit(backbone.decode_step)
  tokens = jnp.asarray([5, 77, 299], jnp.int32)
  np.testing.assert_allclose(step(packed, packed_cache, tokens)[0], step(backbone.params, plain_cache, tokens)[0],
                             rtol=1e-5, atol=1e-5)
  sample = lambda params: np.asarray(decoding.sample(backbone, params, embeds, mask, jax.random.key(0),
                                                     max_new_tokens=6, greedy=True, eos_id=None, pad_id=0)[0])
  np.testing.assert_array_equal(sample(packed), sample(backbone.params))


def test_packed_kernels_serve_long_inputs_through_xla(backbone):
  packed = backbone.inference_params(backbone.params)
  rows = llama.SMALL_ROWS + 6  # A prefill-sized input: unpacked inside the call, XLA's dot.
  embeds = jax.random.normal(jax.random.key(5), (1, rows, backbone.embed_dim))
  mask = jnp.ones((1, rows), jnp.int32)
  init = jax.jit(backbone.init_decode, static_argnums=3)
  np.testing.assert_allclose(init(packed, embeds, mask, 1)[0], init(backbone.params, embeds, mask, 1)[0],
                             rtol=1e-5, atol=1e-5)


def test_without_the_kernel_inference_params_stay_unpacked(backbone, monkeypatch):
  monkeypatch.setattr(library, "_state", {"available": False, "error": "disabled for the test"})
  params = backbone.inference_params(backbone.params)
  assert params["layers_0"]["mlp"]["wi"]["kernel"].ndim == 2
  with pytest.raises(ConfigError, match="disabled for the test"):
    backbone.fused_params(backbone.params, pack=True)


def test_unwritable_cache_folder_builds_under_the_temporary_folder(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("MSP_KERNEL_CACHE", str(blocker / "kernels"))  # mkdir under a file fails
  path = library.build()
  assert path.is_file() and path.parent.name == "msp_jax_kernels"
