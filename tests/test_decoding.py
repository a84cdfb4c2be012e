"""`msp_jax.synthesis.decoding`: the jitted KV-cache sampler against full re-computation, and the sampling filters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.synthesis import decoding
from msp_jax.backbones import llama
from msp_jax.backbones.bpe_tokenizer import BpeTokenizer, byte_level_alphabet

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def backbone() -> llama.LlamaBackbone:
  """The tiny Llama (vocab 320) with a byte-level tokenizer: 3 control tokens then the 256 bytes."""
  tokens = SPECIALS + byte_level_alphabet()
  tokenizer = BpeTokenizer.from_vocab(tokens, [], [3, 3, 3] + [1] * 256, eos_id=2, pad_id=0)
  # Untied output layer: with tied embeddings a random tiny model just repeats its last input token.
  config = dataclasses.replace(llama.LLAMA_CONFIGS["tiny"], tie_embeddings=False)
  params = llama.init_params(config, jax.random.key(11))
  return llama.LlamaBackbone(config, params, tokenizer, name="tiny")


def _prompts(backbone, with_prefix: bool):
  prefix = jax.random.normal(jax.random.key(5), (1, 3, backbone.embed_dim)) if with_prefix else None
  return decoding.prompt_embeds_from_texts(backbone, backbone.params, ["hi", "a longer prompt", "mid one"],
                                           prefix_embeds=prefix)


def _greedy_by_full_forward(backbone, embeds, mask, steps: int) -> np.ndarray:
  """Reference: re-run the whole teacher-forced forward for every new token."""
  forward = jax.jit(backbone.target_logits)
  generated = np.zeros((embeds.shape[0], 0), np.int32)
  for t in range(steps):
    targets = np.concatenate([generated, np.zeros((embeds.shape[0], 1), np.int32)], axis=1)
    logits = forward(backbone.params, embeds, mask, jnp.asarray(targets), jnp.ones(targets.shape, jnp.int32))
    generated = np.concatenate([generated, np.argmax(np.asarray(logits[:, t]), -1)[:, None]], axis=1)
  return generated


@pytest.mark.parametrize("with_prefix", [False, True])
def test_greedy_decoding_equals_rerunning_the_full_forward(backbone, with_prefix):
  embeds, mask = _prompts(backbone, with_prefix)
  tokens, lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(0),
                                    max_new_tokens=8, greedy=True, eos_id=None)
  expected = _greedy_by_full_forward(backbone, embeds, mask, 8)
  np.testing.assert_array_equal(np.asarray(tokens), expected)
  np.testing.assert_array_equal(np.asarray(lengths), [8, 8, 8])
  assert all(len(set(row)) > 4 for row in expected.tolist())  # Not a model that repeats one token.


def test_fused_weights_sample_the_same_tokens(backbone):
  embeds, mask = _prompts(backbone, with_prefix=True)
  run = lambda params: np.asarray(decoding.sample(backbone, params, embeds, mask, jax.random.key(9),
                                                  max_new_tokens=8, temperature=1.0, top_k=20, eos_id=None)[0])
  np.testing.assert_array_equal(run(backbone.fused_params(backbone.params)), run(backbone.params))


def test_prompt_embeds_put_prefix_first_and_left_pad_the_text(backbone):
  embeds, mask = _prompts(backbone, with_prefix=True)
  # "a longer prompt" is 15 bytes = 15 tokens; "hi" 2.
  assert embeds.shape == (3, 3 + 15, backbone.embed_dim)
  np.testing.assert_array_equal(np.asarray(mask[0]), [1, 1, 1] + [0] * 13 + [1, 1])
  hi = backbone.embed(backbone.params, jnp.asarray([backbone.tokenizer.encode("hi")]))
  np.testing.assert_array_equal(np.asarray(embeds[0, -2:]), np.asarray(hi[0]))


def test_top_k_one_equals_greedy(backbone):
  embeds, mask = _prompts(backbone, with_prefix=False)
  greedy, _ = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(0), max_new_tokens=6,
                              greedy=True, eos_id=None)
  sampled, _ = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(42), max_new_tokens=6,
                               temperature=1.7, top_k=1, eos_id=None)
  np.testing.assert_array_equal(np.asarray(sampled), np.asarray(greedy))


@pytest.mark.parametrize("trial", range(12))
def test_chunked_top_k_is_exactly_a_stable_sort_of_the_row(trial):
  """`decoding.exact_top_k` against NumPy: the k largest values, equal values in index order, on fresh rows with
  many ties, -inf and the constraint's removed value, over chunk sizes that do and do not divide the row."""
  rng = np.random.default_rng([trial, 11])
  batch, n, k = 5, int(rng.integers(60, 3000)), int(rng.integers(1, 60))
  x = (rng.integers(-4, 4, (batch, n)) if trial % 2 else rng.standard_normal((batch, n))).astype(np.float32)
  x[rng.random((batch, n)) < (0.95 if trial % 3 == 0 else 0.1)] = -np.inf
  x[rng.random((batch, n)) < 0.05] = decoding._NEG
  order = np.stack([np.lexsort((np.arange(n), -row))[:k] for row in x])  # stable: ties by index
  for chunk in (1, 7, 32, 200):
    values, indices = jax.jit(decoding.exact_top_k, static_argnums=(1, 2))(jnp.asarray(x), k, chunk)
    np.testing.assert_array_equal(np.asarray(indices), order)
    np.testing.assert_array_equal(np.asarray(values), np.take_along_axis(x, order, axis=1))
    assert indices.dtype == jnp.int32


def test_top_p_keeps_the_smallest_set_reaching_p():
  probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
  logits = jnp.log(jnp.asarray([probs, probs[::-1]]))
  keep = np.asarray(decoding.top_p_keep(logits, 0.8))
  # 0.5 + 0.2 = 0.7 < 0.8, so 0.15 is needed; with it the mass is 0.85 and 0.1, 0.05 are dropped.
  np.testing.assert_array_equal(keep[0], [False, True, False, True, True])
  np.testing.assert_array_equal(keep[1], [True, True, False, True, False])
  np.testing.assert_array_equal(np.asarray(decoding.top_p_keep(logits, 0.4))[0], [0, 1, 0, 0, 0])


def test_top_p_sampling_draws_only_from_the_nucleus():
  probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
  logits = jnp.log(jnp.tile(jnp.asarray(probs, jnp.float32), (4000, 1)))
  draws = np.asarray(decoding.choose_tokens(jax.random.key(1), logits, temperature=1.0, top_k=0, top_p=0.8,
                                            use_top_p=True, greedy=False))
  assert set(draws.tolist()) == {1, 3, 4}


def test_sampling_frequencies_follow_the_tempered_softmax():
  logits = jnp.asarray([[0.0, 1.0, 2.0, -1.0]] * 20000)
  draws = np.asarray(decoding.choose_tokens(jax.random.key(2), logits, temperature=2.0, top_k=0, top_p=1.0,
                                            use_top_p=False, greedy=False))
  expected = np.exp(np.array([0.0, 0.5, 1.0, -0.5]))
  expected /= expected.sum()
  freq = np.bincount(draws, minlength=4) / len(draws)
  np.testing.assert_allclose(freq, expected, atol=0.015)  # ~4 standard errors at n = 20000.


def test_same_seed_same_tokens_and_other_seed_other_tokens(backbone):
  embeds, mask = _prompts(backbone, with_prefix=False)
  run = lambda seed: np.asarray(decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(seed),
                                                max_new_tokens=10, temperature=1.0, eos_id=None)[0])
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.array_equal(run(3), run(4))


def test_eos_stops_a_row_and_pads_the_rest(backbone):
  embeds, mask = _prompts(backbone, with_prefix=False)
  free, _ = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(0), max_new_tokens=8,
                            greedy=True, eos_id=None)
  free = np.asarray(free)
  eos = int(free[1, 2])  # A token the second row emits at step 2.
  tokens, lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(0), max_new_tokens=8,
                                    greedy=True, eos_id=eos, pad_id=0)
  tokens = np.asarray(tokens)
  for row in range(3):
    hits = np.nonzero(free[row] == eos)[0]
    stop = int(hits[0]) + 1 if len(hits) else 8
    np.testing.assert_array_equal(tokens[row, :stop], free[row, :stop])
    np.testing.assert_array_equal(tokens[row, stop:], 0)
    assert int(lengths[row]) == stop
  assert int(lengths[1]) <= 3


def test_repetition_penalty_prevents_repeats(backbone):
  embeds, mask = _prompts(backbone, with_prefix=False)
  tokens, _ = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(0), max_new_tokens=12,
                              greedy=True, eos_id=None, repetition_penalty=1e6)
  for row in np.asarray(tokens):
    assert len(set(row.tolist())) == len(row)


class _CountingBackbone:
  """Delegates to a backbone and counts how often `decode_step` is traced."""

  def __init__(self, inner):
    self.inner = inner
    self.decode_traces = 0

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def decode_step(self, params, cache, tokens):
    self.decode_traces += 1
    return self.inner.decode_step(params, cache, tokens)


def test_decoding_twice_with_the_same_shapes_compiles_once(backbone):
  counting = _CountingBackbone(backbone)
  embeds, mask = _prompts(backbone, with_prefix=False)
  for seed, temperature in ((0, 1.0), (1, 0.7)):  # New key and temperature: traced values, no recompile.
    decoding.sample(counting, backbone.params, embeds, mask, jax.random.key(seed), max_new_tokens=5,
                    temperature=temperature, top_k=4)
  assert counting.decode_traces == 1
  decoding.sample(counting, backbone.params, embeds[:2], mask[:2], jax.random.key(0), max_new_tokens=5,
                  temperature=1.0, top_k=4)
  assert counting.decode_traces == 2  # A new batch size is a new shape.
