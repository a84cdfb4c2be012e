"""Constrained generation: whatever the logits, every sample parses with exactly the requested attributes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msp_jax.backbones import llama
from msp_jax.backbones.byte_tokenizer import ByteTokenizer
from msp_jax.data import serialization
from msp_jax.data.schema import Attribute, Ontology
from msp_jax.errors import ConfigError
from msp_jax.synthesis import constraints, decoding, generation, planning
from msp_jax.synthesis.grammars import request_grammar

BATCH = 4
PROMPT = 5
MAX_NEW_TOKENS = 96


@pytest.fixture(scope="module")
def backbone() -> llama.LlamaBackbone:
  """A random tiny Llama over UTF-8 bytes; untied, so its logits do not just echo the last input token."""
  config = dataclasses.replace(llama.LLAMA_CONFIGS["tiny"], vocab_size=ByteTokenizer.vocab_size, tie_embeddings=False)
  return llama.LlamaBackbone(config, llama.init_params(config, jax.random.key(3)), ByteTokenizer(), name="tiny")


@pytest.fixture(scope="module")
def vocabulary(backbone) -> constraints.TokenVocabulary:
  return constraints.token_vocabulary(backbone.tokenizer, backbone.vocab_size)


_NAME = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=7)
_TOP_NAME = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=6)


@st.composite
def ontologies_and_requests(draw, task: str):
  """A random ontology of `task` and BATCH random attribute sets the format can express."""
  if task == "semantic_parse":
    intents = ["IN:" + n for n in draw(st.lists(_TOP_NAME, min_size=1, max_size=3, unique=True))]
    spans = ["SL:" + n for n in draw(st.lists(_TOP_NAME, min_size=0, max_size=3, unique=True))]
  else:
    names = draw(st.lists(_NAME, min_size=2, max_size=6, unique=True))
    cut = draw(st.integers(0, len(names) - 1)) if task == "multi_intent" else 0
    intents, spans = names[:cut], names[cut:]
  kind = "entity" if task == "ner" else "slot"
  ontology = Ontology("random", task, tuple([Attribute(n, "intent", n) for n in intents] +
                                            [Attribute(n, kind, n) for n in spans]))
  requests = []
  for _ in range(BATCH):
    chosen_intents = draw(st.lists(st.sampled_from(intents), max_size=2, unique=True)) if intents else []
    chosen_spans = draw(st.lists(st.sampled_from(spans), max_size=3, unique=True)) if spans else []
    if task == "semantic_parse":
      chosen_intents = chosen_intents or [intents[0]]
      if len(chosen_intents) > 1 and not chosen_spans:
        chosen_spans = [spans[0]] if spans else []
        chosen_intents = chosen_intents if spans else chosen_intents[:1]
    attributes = tuple(sorted(set(chosen_intents) | set(chosen_spans))) or (spans or intents)[:1]
    requests.append(tuple(attributes))
  return ontology, requests


def _decode_all(backbone, vocabulary, grammars, seed: int, temperature: float) -> tuple[list[str], object]:
  embeds, mask = _random_prompts(backbone, seed)
  constraint = constraints.GrammarConstraint(vocabulary, grammars, MAX_NEW_TOKENS)
  tokens, lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(seed),
                                    max_new_tokens=MAX_NEW_TOKENS, temperature=temperature, constraint=constraint)
  texts = []
  for row, length in zip(np.asarray(tokens), np.asarray(lengths)):
    ids = [int(t) for t in row[:length] if int(t) != backbone.tokenizer.eos_id]
    texts.append(generation.cut_output(backbone.tokenizer.decode(ids)))
  return texts, constraint


@pytest.mark.parametrize("task", ["multi_intent", "ner", "semantic_parse"])
def test_every_sample_parses_with_exactly_the_requested_attributes(backbone, vocabulary, task):
  @settings(max_examples=12, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
  @given(ontologies_and_requests(task), st.integers(0, 2**31 - 1), st.sampled_from([0.7, 1.5, 4.0]))
  def check(ontology_and_requests, seed, temperature):
    ontology, requests = ontology_and_requests
    grammars = [request_grammar(r, ontology) for r in requests]
    texts, constraint = _decode_all(backbone, vocabulary, grammars, seed, temperature)
    assert constraint.problems == []
    for text, requested in zip(texts, requests):
      parsed = serialization.parse(text, task, ontology)
      assert parsed, (text, parsed, requested)
      assert set(parsed.attributes) == set(requested), (text, requested)
      assert parsed.text.strip()

  check()


class _AllowEverything:
  """A constraint that allows every token, counting its calls."""

  def __init__(self, words: int):
    self.words = words
    self.calls = []

  def masks(self, step, previous, done):
    self.calls.append(step)
    return np.full((len(done), self.words), -1, np.int32)


def _random_prompts(backbone, seed: int):
  rng = np.random.default_rng(seed)
  embeds = jax.numpy.asarray(rng.normal(size=(BATCH, PROMPT, backbone.embed_dim)), jax.numpy.float32)
  return embeds, jax.numpy.ones((BATCH, PROMPT), jax.numpy.int32)


def test_a_constraint_allowing_every_token_samples_the_unconstrained_tokens(backbone):
  embeds, mask = _random_prompts(backbone, 7)
  # The same static settings as the other tests: one compilation each for constrained and free sampling.
  kwargs = dict(max_new_tokens=MAX_NEW_TOKENS, temperature=1.3)
  free, free_lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(11), **kwargs)
  allow = _AllowEverything((backbone.vocab_size + 31) // 32)
  constrained, lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(11),
                                         constraint=allow, **kwargs)
  np.testing.assert_array_equal(np.asarray(constrained), np.asarray(free))
  np.testing.assert_array_equal(np.asarray(lengths), np.asarray(free_lengths))
  assert allow.calls == list(range(int(np.max(lengths))))  # one host call per step, for the whole batch
  assert len(set(np.asarray(free).ravel().tolist())) > 10  # the check compares varied tokens


def test_disallowed_tokens_are_never_sampled(backbone):
  allowed = np.arange(backbone.vocab_size) % 7 == 3

  class EveryThirdOfSeven:
    def masks(self, step, previous, done):
      bits = np.concatenate([allowed, np.zeros((-len(allowed)) % 32, bool)])
      return np.tile(np.packbits(bits, bitorder="little").view(np.int32), (len(done), 1))

  embeds, mask = _random_prompts(backbone, 8)
  tokens, lengths = decoding.sample(backbone, backbone.params, embeds, mask, jax.random.key(2),
                                    max_new_tokens=MAX_NEW_TOKENS, temperature=5.0, constraint=EveryThirdOfSeven())
  tokens = np.asarray(tokens)
  assert all(np.all(allowed[row[:length]]) for row, length in zip(tokens, np.asarray(lengths)))
  assert len(set(tokens.ravel().tolist())) > 10


FRONT_DESK = Ontology("front_desk", "multi_intent", (
    Attribute("book_room", "intent", "book a room"), Attribute("cancel_booking", "intent", "cancel"),
    Attribute("date", "slot", "date"), Attribute("date_period", "slot", "period")))
WEATHER = Ontology("weather", "semantic_parse", (
    Attribute("IN:GET_WEATHER", "intent", "get weather"), Attribute("IN:GET_LOCATION", "intent", "location"),
    Attribute("SL:LOCATION", "slot", "location"), Attribute("SL:DATE_TIME", "slot", "date time")))


@pytest.mark.parametrize("ontology, attributes, message", [
    (FRONT_DESK, ("book_room", "room_type"), "'room_type' is not in the ontology"),
    (FRONT_DESK, (), "empty attribute set"),
    (WEATHER, ("SL:LOCATION",), "no intent"),
    (WEATHER, ("IN:GET_WEATHER", "IN:GET_LOCATION"), "no slot"),
])
def test_a_request_the_grammar_cannot_express_is_a_clear_error(ontology, attributes, message):
  with pytest.raises(ConfigError, match=message):
    request_grammar(attributes, ontology, where="request #3")


def test_a_request_too_long_for_the_token_budget_is_an_error_before_sampling(backbone):
  request = planning.GenerationRequest("s0", ("book_room", "cancel_booking", "date", "date_period"), 2)
  sampling = generation.SamplingConfig(max_new_tokens=20)
  with pytest.raises(ConfigError, match=r"needs \d+ tokens, more than SamplingConfig.max_new_tokens=20"):
    generation.request_grammars(backbone, FRONT_DESK, [request], sampling)
  vocabulary, grammars = generation.request_grammars(backbone, FRONT_DESK, [request],
                                                     dataclasses.replace(sampling, max_new_tokens=96))
  assert grammars[id(request)].intents == ("book_room", "cancel_booking")


@pytest.mark.parametrize("ontology, attributes, prefix", [
    (FRONT_DESK, ("book_room", "date", "date_period"), "book a room for [tomorrow | date"),
    (FRONT_DESK, ("book_room", "date", "date_period"), "[tod"),
    (FRONT_DESK, ("book_room", "date_period"), "for [the week | date_"),
    (FRONT_DESK, ("cancel_booking",), "cancel it please || inte"),
    (WEATHER, ("IN:GET_WEATHER", "SL:DATE_TIME"), "[IN:GET_WEATHER is it cold [SL:DATE"),
    (WEATHER, ("IN:GET_WEATHER", "IN:GET_LOCATION", "SL:LOCATION"), "[IN:GET_WEATHER in [SL:LOCATION [IN:GET_"),
    (WEATHER, ("IN:GET_WEATHER", "SL:DATE_TIME"), "[IN:GET_WEATHER "),
])
def test_closing_text_completes_an_allowed_prefix(ontology, attributes, prefix):
  grammar = request_grammar(attributes, ontology)
  parsed = serialization.parse(prefix + grammar.closing_text(prefix), ontology.task, ontology)
  assert parsed and set(parsed.attributes) == set(attributes), (prefix + grammar.closing_text(prefix), parsed)


def _allowed(bitmask_row: np.ndarray, token: int) -> bool:
  return bool((int(bitmask_row[token // 32]) >> (token % 32)) & 1)


def test_masks_are_computed_per_bpe_token_not_per_character():
  from msp_jax.backbones import gguf_checkpoint

  tokenizer = gguf_checkpoint.load_gguf_tokenizer(gguf_checkpoint.smollm2_gguf_path())
  vocabulary = constraints.token_vocabulary(tokenizer, 49152)
  grammar = request_grammar(("book_room", "date"), FRONT_DESK)
  constraint = constraints.GrammarConstraint(vocabulary, [grammar], max_new_tokens=64)
  written = tokenizer.encode("book a room for [tomorrow")
  previous = np.zeros(1, np.int32)
  for step, token in enumerate(written):
    mask = constraint.masks(step, previous, np.zeros(1, bool))[0]
    assert _allowed(mask, token), tokenizer.decode(written[:step + 1])
    previous[0] = token
  mask = constraint.masks(len(written), previous, np.zeros(1, bool))[0]
  one = lambda text: tokenizer.encode(text)[0] if len(tokenizer.encode(text)) == 1 else pytest.fail(text)  # noqa
  assert _allowed(mask, one(" |"))      # a token holding the space and the bar
  assert _allowed(mask, one(" night"))  # more span text
  for banned in ("]", " [", "\n", " ||"):
    assert not _allowed(mask, one(banned)), banned
  assert not _allowed(mask, tokenizer.eos_id)
  previous[0] = one(" |")
  mask = constraint.masks(len(written) + 1, previous, np.zeros(1, bool))[0]
  assert _allowed(mask, one(" date"))
  assert not _allowed(mask, one(" room")) and not _allowed(mask, one(" time"))  # only the requested label
