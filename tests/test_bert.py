"""`msp_jax.encoders.bert`: per-token hidden states of a small random BERT against float64 NumPy."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.special

from msp_jax.encoders import bert
from msp_jax.errors import ConfigError

CONFIG = bert.BertConfig(vocab_size=40, hidden_size=24, num_layers=2, num_heads=3, intermediate_size=40,
                         max_position_embeddings=16, max_seq_length=16)


hidden_states = jax.jit(bert.hidden_states, static_argnames="config")


def random_params(rng: np.random.Generator) -> bert.Params:
  """Every leaf random (biases and norms too), so each one shows in the output."""
  shapes = jax.eval_shape(lambda key: bert.init_params(CONFIG, key), jax.random.key(0))
  return jax.tree_util.tree_map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32), shapes)


def random_batch(rng: np.random.Generator, batch: int = 4, length: int = 9) -> tuple[np.ndarray, np.ndarray]:
  """token_ids [batch, length], mask [batch, length]: right-padded texts of 1 .. length tokens."""
  lengths = rng.integers(1, length + 1, batch)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  return np.where(mask, rng.integers(1, CONFIG.vocab_size, (batch, length)), 0).astype(np.int32), mask


def numpy_hidden_states(params, token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """float64 BERT: embeddings -> LN, then per layer x = LN(x + attention(x)), x = LN(x + mlp(x))."""
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  batch, length = token_ids.shape
  heads, head_dim = CONFIG.num_heads, CONFIG.hidden_size // CONFIG.num_heads

  def layer_norm(x, norm):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + CONFIG.layer_norm_eps) * norm["scale"] + norm[
        "bias"]

  def linear(x, weights):
    return x @ weights["kernel"] + weights["bias"]

  e = p["embeddings"]
  x = (e["word_embeddings"]["embedding"][token_ids] + e["position_embeddings"]["embedding"][:length]
       + e["token_type_embeddings"]["embedding"][0])
  x = layer_norm(x, e["layer_norm"])
  for i in range(CONFIG.num_layers):
    layer = p[f"layers_{i}"]
    attention = layer["attention"]
    q, k, v = (linear(x, attention[n]).reshape(batch, length, heads, head_dim) for n in ("query", "key", "value"))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim)
    logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    context = np.einsum("bhqk,bkhd->bqhd", weights / weights.sum(-1, keepdims=True), v)
    x = layer_norm(x + linear(context.reshape(batch, length, -1), attention["out"]), layer["attention_norm"])
    h = linear(x, layer["mlp"]["wi"])
    h = 0.5 * h * (1 + scipy.special.erf(h / np.sqrt(2)))
    x = layer_norm(x + linear(h, layer["mlp"]["wo"]), layer["mlp_norm"])
  return x


@pytest.fixture()
def rng() -> np.random.Generator:
  seed = int(np.random.SeedSequence().entropy % 2**32)
  print(f"seed: {seed}")
  return np.random.default_rng(seed)


def test_hidden_states_match_float64_numpy_on_real_tokens(rng):
  params = random_params(rng)
  token_ids, mask = random_batch(rng)
  got = np.asarray(hidden_states(params, token_ids, mask, config=CONFIG))
  assert got.shape == (*token_ids.shape, CONFIG.hidden_size) and got.dtype == np.float32
  want = numpy_hidden_states(params, token_ids, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)


def test_hidden_states_of_real_tokens_do_not_depend_on_padding(rng):
  params = random_params(rng)
  token_ids, mask = random_batch(rng, length=6)
  longer_ids = np.pad(token_ids, ((0, 0), (0, 7)), constant_values=int(rng.integers(1, CONFIG.vocab_size)))
  short = np.asarray(hidden_states(params, token_ids, mask, config=CONFIG))
  long = np.asarray(hidden_states(params, longer_ids, np.pad(mask, ((0, 0), (0, 7))), config=CONFIG))
  real = mask.astype(bool)
  np.testing.assert_allclose(long[:, :6][real], short[real], atol=2e-6)


def test_gradients_reach_every_layer_parameter(rng):
  params = random_params(rng)
  token_ids, mask = random_batch(rng)
  probe = rng.standard_normal((*token_ids.shape, CONFIG.hidden_size)).astype(np.float32)
  loss = lambda p: (bert.hidden_states(p, token_ids, mask, CONFIG) * probe * mask[..., None]).sum()
  grads = jax.jit(jax.grad(loss))(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(grad).all(), jax.tree_util.keystr(path)
    if path[0].key.startswith("layers_") or "layer_norm" in jax.tree_util.keystr(path):
      assert np.abs(grad).max() > 0, jax.tree_util.keystr(path)


def test_embed_fn_is_the_masked_mean_of_hidden_states_normalised(rng):
  params = random_params(rng)
  token_ids, mask = random_batch(rng)
  states = numpy_hidden_states(params, token_ids, mask)
  mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  want = mean / np.linalg.norm(mean, axis=1, keepdims=True)
  got = jax.jit(bert.embed_fn, static_argnames="config")(params, token_ids, mask, config=CONFIG)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_config_rejects_heads_that_do_not_divide_the_hidden_size():
  with pytest.raises(ConfigError, match=r"hidden_size=24 must be a multiple of num_heads=5"):
    bert.BertConfig(hidden_size=24, num_heads=5)


def test_bfloat16_dense_gradients_match_float64_within_bfloat16_rounding(rng):
  """`precision.dense` on a bfloat16 kernel: value and both gradients (its custom VJP runs the gradient matmuls
  on bfloat16 inputs) against float64 NumPy on the same bfloat16-rounded operands."""
  import jax.numpy as jnp
  from msp_jax.encoders import precision

  x = rng.standard_normal((3, 5, 64)).astype(np.float32)
  kernel = (rng.standard_normal((64, 96)) / 8).astype(np.float32)
  bias = rng.standard_normal(96).astype(np.float32)
  upstream = rng.standard_normal((3, 5, 96)).astype(np.float32)

  def loss(x, kernel):
    return jnp.sum(precision.dense(x, kernel.astype(jnp.bfloat16), bias) * upstream)

  value, (dx, dkernel) = jax.value_and_grad(loss, argnums=(0, 1))(x, kernel)
  as64 = lambda a: np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)  # noqa: E731
  x64, k64, g64 = as64(x), as64(kernel), as64(upstream)
  np.testing.assert_allclose(value, np.sum((x64 @ k64 + bias) * upstream), rtol=1e-4)
  np.testing.assert_allclose(dx, g64 @ k64.T, rtol=2e-2, atol=2e-2)
  expected = x64.reshape(-1, 64).T @ g64.reshape(-1, 96)
  assert dkernel.dtype == np.float32  # widened back to the float32 weights
  np.testing.assert_allclose(dkernel, expected, rtol=2e-2, atol=5e-2)
  float32_dkernel = jax.grad(lambda k: jnp.sum((jnp.asarray(x) @ k + bias) * upstream))(kernel)
  assert np.abs(np.asarray(dkernel) - float32_dkernel).max() < 0.02 * np.abs(float32_dkernel).max()
