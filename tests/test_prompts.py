"""Soft prompts: initialisers (description rows, instruction rows, vocabulary rows), lookup, axes, errors."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.tuning import prompts
from msp_jax.data.schema import Attribute, Ontology
from msp_jax.errors import ConfigError

VOCAB, WIDTH = 64, 6


class WordTokenizer:
  """A toy tokenizer: each new lower-cased word gets the next id from 10 (ids below 10 stay unused)."""

  def __init__(self):
    self.ids: dict[str, int] = {}

  def encode(self, text: str) -> list[int]:
    return [self.ids.setdefault(w, 10 + len(self.ids)) for w in re.findall(r"\w+", text.lower())]


def _ontology(*descriptions: str) -> Ontology:
  attributes = tuple(Attribute(name=f"attr_{i}", kind="intent", description=d) for i, d in enumerate(descriptions))
  return Ontology(domain="toy", task="multi_intent", attributes=attributes)


def _cycled(ids: list[int], length: int) -> list[int]:
  """Reference: position i of a repeated description holds token i mod len(ids)."""
  return [ids[i % len(ids)] for i in range(length)]


@pytest.fixture
def embedding() -> np.ndarray:
  return np.random.default_rng(0).normal(size=(VOCAB, WIDTH)).astype(np.float32)


def test_attribute_token_ids_repeat_each_description_to_fill_the_prompt():
  tok = WordTokenizer()
  ontology = _ontology("book a room", "cancel", "change the booking date")
  ids = prompts.attribute_token_ids(ontology, tok.encode, 7)
  expected = [_cycled(tok.encode(a.description), 7) for a in ontology.attributes]
  assert ids.dtype == np.int32 and ids.shape == (3, 7)
  np.testing.assert_array_equal(ids, np.array(expected))


def test_attribute_token_ids_cut_a_description_longer_than_the_prompt():
  tok = WordTokenizer()
  ids = prompts.attribute_token_ids(_ontology("one two three four five six"), tok.encode, 4)
  np.testing.assert_array_equal(ids, [tok.encode("one two three four")])


def test_attribute_prompts_initialised_from_description_rows(embedding):
  tok = WordTokenizer()
  ontology = _ontology("check in", "late checkout please", "wifi")
  ids = prompts.attribute_token_ids(ontology, tok.encode, 5)
  module = prompts.AttributePrompts(num_attributes=3, embed_dim=WIDTH, length=5,
                                    prompt_init=prompts.from_token_ids(embedding, ids))
  table = nn.unbox(module.init(jax.random.PRNGKey(1), jnp.zeros([1, 2], jnp.int32)))["params"]["prompt"]
  expected = np.stack([np.stack([embedding[t] for t in _cycled(tok.encode(a.description), 5)])
                       for a in ontology.attributes])
  np.testing.assert_array_equal(np.asarray(table), expected)


def test_attribute_prompts_lookup_returns_the_rows_of_the_ids():
  module = prompts.AttributePrompts(num_attributes=5, embed_dim=WIDTH, length=3)
  ids = jnp.array([[4, 0, 2], [1, 1, 3]], jnp.int32)
  variables = module.init(jax.random.PRNGKey(2), ids)
  table = np.asarray(nn.unbox(variables)["params"]["prompt"])
  out = np.asarray(module.apply(variables, ids))
  assert out.shape == (2, 3, 3, WIDTH)
  for b in range(2):
    for a in range(3):
      np.testing.assert_array_equal(out[b, a], table[int(ids[b, a])])


def test_instruction_prefix_is_sentence_rows_then_vocabulary_rows(embedding):
  sentence = [17, 3, 42, 8]
  population = 20
  init = prompts.from_instruction(embedding, sentence,
                                  fill_init=prompts.from_sampled_vocab(embedding, population_size=population))
  module = prompts.InstructionPrefix(embed_dim=WIDTH, length=10, prompt_init=init)
  prefix = np.asarray(module.apply(module.init(jax.random.PRNGKey(3))))
  assert prefix.shape == (10, WIDTH)
  np.testing.assert_array_equal(prefix[:4], embedding[sentence])
  for row in prefix[4:]:
    matches = np.flatnonzero(np.all(embedding == row, axis=1))
    assert matches.size == 1 and matches[0] < population, "each fill row must be one of the first 20 vocab rows"


def test_instruction_prefix_keeps_the_first_tokens_of_a_long_sentence(embedding):
  sentence = list(range(30, 42))
  module = prompts.InstructionPrefix(embed_dim=WIDTH, length=5,
                                     prompt_init=prompts.from_instruction(embedding, sentence))
  prefix = module.apply(module.init(jax.random.PRNGKey(4)))
  np.testing.assert_array_equal(np.asarray(prefix), embedding[sentence[:5]])


def test_instruction_token_ids_are_sentence_then_sampled_population_ids():
  ids = prompts.instruction_token_ids([50, 51, 52], 12, vocab_size=VOCAB, rng=np.random.default_rng(5),
                                      population_size=16)
  assert ids.dtype == np.int32 and ids.shape == (12,)
  np.testing.assert_array_equal(ids[:3], [50, 51, 52])
  assert np.all((ids[3:] >= 0) & (ids[3:] < 16))


def test_set_prompt_writes_embedding_rows_into_initialised_params(embedding):
  tok = WordTokenizer()
  ontology = _ontology("play music", "stop")
  module = prompts.AttributePrompts(num_attributes=2, embed_dim=WIDTH, length=4)
  params = nn.unbox(module.init(jax.random.PRNGKey(6), jnp.zeros([1, 1], jnp.int32)))["params"]
  ids = prompts.attribute_token_ids(ontology, tok.encode, 4)
  new = prompts.set_prompt(params, embedding[ids])
  np.testing.assert_array_equal(np.asarray(new["prompt"]), embedding[ids])
  assert new["prompt"].dtype == params["prompt"].dtype


def test_sampled_vocab_init_draws_rows_from_the_population(embedding):
  init = prompts.from_sampled_vocab(embedding, population_size=8)
  rows = np.asarray(init(jax.random.PRNGKey(7), (3, 4, WIDTH))).reshape(-1, WIDTH)
  for row in rows:
    matches = np.flatnonzero(np.all(embedding == row, axis=1))
    assert matches.size >= 1 and matches.min() < 8


def test_default_initialisation_is_uniform_within_half():
  module = prompts.InstructionPrefix(embed_dim=WIDTH, length=50)
  prefix = np.asarray(module.apply(module.init(jax.random.PRNGKey(8))))
  assert np.all(np.abs(prefix) <= 0.5) and prefix.std() > 0.2


def test_params_declare_logical_axes():
  table = prompts.AttributePrompts(num_attributes=2, embed_dim=WIDTH, length=3).init(
      jax.random.PRNGKey(9), jnp.zeros([1, 1], jnp.int32))["params"]["prompt"]
  prefix = prompts.InstructionPrefix(embed_dim=WIDTH, length=3).init(jax.random.PRNGKey(9))["params"]["prompt"]
  assert table.names == ("attributes", "prompt", "prompt_embed")
  assert prefix.names == ("prompt", "prompt_embed")


def test_zero_length_attribute_prompt_is_a_config_error():
  module = prompts.AttributePrompts(num_attributes=2, embed_dim=WIDTH, length=0)
  with pytest.raises(ConfigError, match=r"attribute prompt length=0"):
    module.init(jax.random.PRNGKey(0), jnp.zeros([1, 1], jnp.int32))


def test_zero_length_in_attribute_token_ids_is_a_config_error():
  with pytest.raises(ConfigError, match=r"length=0"):
    prompts.attribute_token_ids(_ontology("a b"), WordTokenizer().encode, 0)


def test_empty_description_names_the_attribute():
  with pytest.raises(ConfigError, match=r"'toy'.*'attr_1'.*empty description"):
    prompts.attribute_token_ids(_ontology("fine", "   "), WordTokenizer().encode, 4)


def test_description_without_tokens_names_the_attribute():
  with pytest.raises(ConfigError, match=r"'attr_0'.*'\?\?\?' encodes to no tokens"):
    prompts.attribute_token_ids(_ontology("???"), WordTokenizer().encode, 4)


def test_set_prompt_with_wrong_shape_names_both_shapes(embedding):
  params = {"prompt": jnp.zeros([2, 4, WIDTH])}
  with pytest.raises(ConfigError, match=r"\(2, 3, 6\).*\(2, 4, 6\)"):
    prompts.set_prompt(params, embedding[np.zeros([2, 3], np.int32)])
