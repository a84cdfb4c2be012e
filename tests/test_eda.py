"""Label-preserving EDA (`evaluation.eda`): copies of span and TOP data parse and keep every span's label and text."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from msp_jax.data import nlupp, topv2
from msp_jax.data.schema import Example, Span
from msp_jax.data.serialization import ParseFailure, check_spans, parse, serialize
from msp_jax.evaluation import eda


def spans_by_label(example: Example) -> collections.Counter:
  return collections.Counter((s.label, s.text) for s in example.spans)


def test_intent_only_copies_are_those_of_the_original_baseline():
  seeds = [Example("s0", "toy", "book a double room for Friday please", intents=("book",)),
           Example("s1", "toy", "wifi", intents=("wifi",)),
           Example("s2", "toy", "cancel my booking and the parking", intents=("cancel", "book"))]
  texts = [c.text for c in eda.eda_examples(seeds, 6, seed=3)]
  # Pinned from the span-dropping EDA this module replaced (same operations, same random draws).
  assert texts == ["a book a double room for Friday please", "wifi wifi", "cancel my booking and parking the",
                   "double a book room for Friday please", "wifi wifi", "cancel booking and the parking"]


def test_copies_of_nlupp_span_data_parse_and_keep_every_span(data_dir):
  domain = nlupp.read_nlupp(data_dir, "hotels")
  seeds = [e for e in domain.splits["train"] if e.spans][:120]
  mentions = eda.mentions_of(seeds)
  copies = eda.eda_examples(seeds, 480, seed=5)
  replaced = 0
  for copy, seed in zip(copies, [seeds[i % len(seeds)] for i in range(len(copies))]):
    assert check_spans(copy.text, copy.spans) is None and copy.intents == seed.intents
    back = parse(serialize(copy, "multi_intent"), "multi_intent", domain.ontology)
    assert not isinstance(back, ParseFailure) and back.spans == copy.spans and back.text == copy.text
    assert sorted(s.label for s in copy.spans) == sorted(s.label for s in seed.spans)
    if spans_by_label(copy) != spans_by_label(seed):  # mention replacement: texts from the seeds' own mentions
      replaced += 1
      assert all(s.text in mentions[s.label] for s in copy.spans)
  assert 0 < replaced < len(copies)


def test_operations_touch_only_words_outside_spans():
  text = "please book [6 pm], tomorrow at the Grand Hotel now"
  start = text.index("Grand Hotel")
  seed = Example("s", "toy", text, intents=("book",), spans=(Span(start, start + 11, "place", "Grand Hotel"),
                                                             Span(12, 18, "time", "[6 pm]")))
  rng = np.random.default_rng(0)
  for _ in range(200):
    copy = eda.eda_copy(seed, rng, alpha=0.3)  # no mention pool: swap / delete / insert only
    assert spans_by_label(copy) == spans_by_label(seed) and check_spans(copy.text, copy.spans) is None
    assert "[6 pm]," in copy.text  # punctuation glued to a span moves with it
    outside = collections.Counter(copy.text.replace("Grand Hotel", "").replace("[6 pm],", "").split())
    assert set(outside) <= set("please book tomorrow at the now".split())


def test_mention_replacement_swaps_a_span_for_a_seed_mention_of_the_same_label():
  seeds = [Example("a", "toy", "fly to Paris today", spans=(Span(7, 12, "city", "Paris"),)),
           Example("b", "toy", "fly to New York", spans=(Span(7, 15, "city", "New York"),))]
  mentions = eda.mentions_of(seeds)
  assert mentions == {"city": ("Paris", "New York")}
  rng = np.random.default_rng(1)
  texts = set()
  for _ in range(60):
    copy = eda.eda_copy(seeds[0], rng, mentions)
    assert [s.label for s in copy.spans] == ["city"] and copy.spans[0].text in ("Paris", "New York")
    texts.add(copy.spans[0].text)
  assert texts == {"Paris", "New York"}


def test_topv2_copies_are_valid_parses_with_the_same_slots(data_dir):
  examples, labels = topv2.read_topv2_file(data_dir / "topv2" / "weather_eval.tsv", "weather", uid_prefix="v")
  ontology = topv2.ontology_from_labels("weather", labels)
  seeds = list(examples[:200]) + [e for e in examples if "[IN:" in e.parse[1:]][:2]  # with the nested ones
  copies = eda.eda_examples(seeds, 600, seed=2)
  for copy, seed in zip(copies, [seeds[i % len(seeds)] for i in range(len(copies))]):
    back = parse(copy.parse, "semantic_parse", ontology)
    assert not isinstance(back, ParseFailure) and back.text == copy.text and back.spans == copy.spans
    assert copy.intents[0] == seed.intents[0]
    assert sorted(s.label for s in copy.spans) == sorted(s.label for s in seed.spans)
  assert any(c.parse != " ".join(s.parse.split()) for c, s in zip(copies, seeds))


def test_copies_are_deterministic_given_the_seed():
  seeds = [Example("a", "toy", "fly to Paris today please", spans=(Span(7, 12, "city", "Paris"),))]
  assert eda.eda_examples(seeds, 5, seed=1) == eda.eda_examples(seeds, 5, seed=1)
  assert eda.eda_examples(seeds, 5, seed=1) != eda.eda_examples(seeds, 5, seed=2)
  with pytest.raises(ValueError, match="no seed examples"):
    eda.eda_examples([], 3)
