"""Metrics on hand-computed cases (percent for P/R/F1/EM, fraction for Distinct@K), and span F1 against seqeval."""

from __future__ import annotations

import pytest
import seqeval.metrics
from hypothesis import given, settings, strategies as st

from msp_jax.evaluation import metrics, spans
from msp_jax.data.schema import Attribute, Ontology, Span
from msp_jax.errors import DataError

HOTEL = Ontology("hotels", "multi_intent", (
    Attribute("a", "intent", "a"), Attribute("b", "intent", "b"), Attribute("c", "intent", "c"),
    Attribute("time", "slot", "time")))
NER = Ontology("x", "ner", (Attribute("person", "entity", "p"), Attribute("org", "entity", "o")))
TOP = Ontology("w", "semantic_parse", (Attribute("IN:A", "intent", "a"), Attribute("IN:B", "intent", "b"),
                                       Attribute("SL:S", "slot", "s")))


def test_intent_micro_f1_multi_label_partial_credit():
  # ex1: gold {a,b}, pred {a,c}: tp 1 fp 1 fn 1. ex2: gold {c}, pred {c}: tp 1. -> P 2/3, R 2/3.
  scores = metrics.intent_micro_f1([{"a", "b"}, {"c"}], [{"a", "c"}, {"c"}])
  assert scores["precision"] == pytest.approx(200 / 3)
  assert scores["recall"] == pytest.approx(200 / 3)
  assert scores["f1"] == pytest.approx(200 / 3)


def test_intent_micro_f1_empty_predictions_score_zero_precision_and_recall():
  scores = metrics.intent_micro_f1([{"a"}, {"b", "c"}], [set(), set()])
  assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
  assert scores["fn"] == 3.0


def test_intent_micro_f1_unequal_precision_and_recall():
  # gold {a,b,c}, pred {a}: P 100, R 33.3, F1 50.
  scores = metrics.intent_micro_f1([["a", "b", "c"]], [["a"]])
  assert scores["precision"] == 100.0
  assert scores["recall"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(50.0)


def test_span_micro_f1_needs_exact_text_and_type_and_counts_repeats():
  gold = [[("Paris", "location"), ("Paris", "location"), ("Ada", "person")], [Span(0, 3, "org", "IBM")]]
  pred = [[("Paris", "location"), ("Ada", "org")], [("IBM ", "org")]]
  scores = metrics.span_micro_f1(gold, pred)
  # tp 1 (one Paris); fp 2 (Ada/org, "IBM "); fn 3 (second Paris, Ada/person, IBM).
  assert scores["precision"] == pytest.approx(100 / 3)
  assert scores["recall"] == pytest.approx(25.0)
  assert scores["f1"] == pytest.approx(2 * (100 / 3) * 25 / (100 / 3 + 25))


WORD_TAGS = spans.tag_names(("PER", "LOC", "ORG"))


def char_spans(tags: list[str]) -> list[Span]:
  """Spans of a sentence of one-character words 'w w w ...' read from word tags (conlleval chunks)."""
  offsets = [(2 * i, 2 * i + 1) for i in range(len(tags))]
  return list(spans.spans_from_tags(tags, offsets, " ".join("w" * len(tags))))


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> tuple[float, float, float]:
  """seqeval's default (conlleval) entity P/R/F1 in percent."""
  return tuple(100 * f(gold, pred, zero_division=0) for f in (seqeval.metrics.precision_score,
                                                                seqeval.metrics.recall_score,
                                                                seqeval.metrics.f1_score))


@st.composite
def tagged_corpora(draw):
  lengths = draw(st.lists(st.integers(0, 12), min_size=1, max_size=6))
  gold = [draw(st.lists(st.sampled_from(WORD_TAGS), min_size=n, max_size=n)) for n in lengths]
  pred = [draw(st.lists(st.sampled_from(WORD_TAGS), min_size=n, max_size=n)) for n in lengths]
  return gold, pred


@settings(max_examples=300, deadline=None)
@given(tagged_corpora())
def test_char_span_f1_equals_seqeval_on_random_label_sequences(corpora):
  gold, pred = corpora
  ours = metrics.char_span_micro_f1([char_spans(g) for g in gold], [char_spans(p) for p in pred])
  assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(seqeval_scores(gold, pred))


@pytest.mark.parametrize("gold, pred, expected", [
    # No predictions: nothing right.
    ([["B-PER", "I-PER", "O", "B-LOC"]], [["O", "O", "O", "O"]], (0.0, 0.0, 0.0)),
    # Every span typed wrong.
    ([["B-PER", "O", "B-LOC"]], [["B-ORG", "O", "B-PER"]], (0.0, 0.0, 0.0)),
    # Partial overlap is wrong: one exact hit (LOC) of 2 gold and 2 predicted.
    ([["B-PER", "I-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O", "B-LOC"]], (50.0, 50.0, 50.0)),
    # An I- after O opens a span (conlleval): the prediction is right.
    ([["O", "B-ORG", "I-ORG"]], [["O", "I-ORG", "I-ORG"]], (100.0, 100.0, 100.0)),
    # 3 gold, 1 predicted and right: P 100, R 33.3, F1 50.
    ([["B-PER", "O", "B-LOC"], ["B-ORG"]], [["B-PER", "O", "O"], ["O"]], (100.0, 100 / 3, 50.0)),
])
def test_char_span_f1_hand_cases_agree_with_seqeval(gold, pred, expected):
  ours = metrics.char_span_micro_f1([char_spans(g) for g in gold], [char_spans(p) for p in pred])
  assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(expected)
  assert seqeval_scores(gold, pred) == pytest.approx(expected)


def test_char_span_f1_matches_offsets_not_text():
  gold = [[Span(0, 5, "LOC", "Paris"), Span(10, 15, "LOC", "Paris")]]
  pred = [[Span(10, 15, "LOC", "Paris"), Span(0, 4, "LOC", "Pari")]]
  assert metrics.char_span_micro_f1(gold, pred)["f1"] == pytest.approx(50.0)


def test_accuracy_counts_equal_single_labels():
  assert metrics.accuracy(["IN:A", "IN:B", "IN:A", None], ["IN:A", "IN:A", "IN:A", None]) == {"accuracy": 75.0}


def test_exact_match_normalises_whitespace():
  scores = metrics.exact_match(["[IN:A x  ]", "[IN:A y ]"], [" [IN:A x ] ", "[IN:A z ]"])
  assert scores == {"exact_match": 50.0}


def test_distinct_k_counts_unique_over_total_kgrams():
  # bigrams: (a b) (b a) (a b) | (a b) -> 4 total, 2 unique.
  assert metrics.distinct_k(["a b a b", "A B"], 2) == {"distinct_2": 0.5}
  assert metrics.distinct_k(["x"], 2) == {"distinct_2": 0.0}


def test_example_averaged_f1_averages_per_example_scores():
  # ex1: P 50 R 100 F1 66.7; ex2: both empty -> 100; ex3: pred empty -> 0.
  scores = metrics.example_averaged_f1([{"a"}, set(), {"b"}], [{"a", "b"}, set(), set()])
  assert scores["precision"] == pytest.approx(50.0)
  assert scores["recall"] == pytest.approx(200 / 3)
  assert scores["f1"] == pytest.approx((200 / 3 + 100) / 3)


def test_multi_intent_text_metric_parses_strings_and_counts_failures_as_empty():
  fn = metrics.text_metrics("multi_intent", HOTEL)
  targets = ["at [6 | time] || intents: a, b", "hello || intents: c"]
  predictions = ["at [6 | time] || intents: a", "garbage [ without close"]
  scores = fn(targets, predictions)
  assert scores["parse_failure_rate"] == 50.0
  assert scores["intent_precision"] == 100.0
  assert scores["intent_recall"] == pytest.approx(100 / 3)
  assert scores["slot_f1"] == 100.0


def test_ner_text_metric_reports_entity_f1():
  fn = metrics.text_metrics("ner", NER)
  scores = fn(["[Ada | person] met [IBM | org]"], ["[Ada | person] met IBM"])
  assert scores["entity_precision"] == 100.0
  assert scores["entity_recall"] == 50.0


def test_semantic_parse_text_metric_reports_exact_match_on_canonical_parses():
  fn = metrics.text_metrics("semantic_parse", TOP)
  scores = fn(["[IN:A x [SL:S y ] ]", "[IN:A x ]"], ["[IN:A x [SL:S y]]", "[IN:B x ]"])
  assert scores["exact_match"] == 50.0
  assert scores["intent_f1"] == 50.0
  assert scores["slot_f1"] == 100.0


def test_text_metric_rejects_a_target_that_does_not_parse():
  fn = metrics.text_metrics("ner", NER)
  with pytest.raises(DataError, match="target 0 does not parse"):
    fn(["[Ada | nobody]"], ["Ada"])
