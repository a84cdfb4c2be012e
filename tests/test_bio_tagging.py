"""Character spans <-> BIO tags over word pieces (`evaluation.spans`) and valid decoding (`evaluation.tagging`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from msp_jax.data.schema import Span
from msp_jax.encoders import minilm_weights
from msp_jax.encoders.wordpiece import WordPieceTokenizer
from msp_jax.evaluation import spans, tagging

LABELS = ("person", "city", "org")
TAGS = spans.tag_names(LABELS)
TAG_INDEX = {tag: i for i, tag in enumerate(TAGS)}
# Words that split into several pieces, carry accents, non-Latin scripts, emoji, or punctuation.
WORDS = ["Crème", "brûlée", "naïve", "Ångström", "東京", "Zürich", "São", "Paulo", "U.S.A.", "(New", "York)",
         "e-mail", "don't", "50%", "$3.99", "unbelievably", "hyperparameterisation", "🙂", "ﬁnance", "x", "Ⅻ",
         "İstanbul", "-", ",", "...", "C++", "O'Neil", "straße"]


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
  return WordPieceTokenizer(minilm_weights.minilm_model_dir() / "tokenizer.json", 256)


@st.composite
def labelled_texts(draw):
  """A text of WORDS joined by one or two spaces, and non-overlapping spans over whole runs of words."""
  words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12))
  gaps = draw(st.lists(st.sampled_from([" ", "  "]), min_size=len(words), max_size=len(words)))
  starts, text = [], ""
  for word, gap in zip(words, gaps):
    text += gap if text else ""
    starts.append(len(text))
    text += word
  result, i = [], 0
  while i < len(words):
    size = draw(st.integers(0, 3))
    if size and i + size <= len(words):
      start, end = starts[i], starts[i + size - 1] + len(words[i + size - 1])
      result.append(Span(start, end, draw(st.sampled_from(LABELS)), text[start:end]))
      i += size
    else:
      i += 1
  return text, tuple(result)


@settings(max_examples=150, deadline=None)
@given(labelled_texts())
def test_spans_survive_word_pieces_unicode_and_punctuation(tokenizer, case):
  text, gold = case
  pieces = tokenizer.encode_batch_with_offsets([text])[0]
  tags = spans.tags_for_pieces(pieces.offsets, gold, TAG_INDEX)
  assert tags[0] == spans.IGNORE and tags[-1] == spans.IGNORE  # [CLS], [SEP]
  names = [TAGS[t] if t >= 0 else "O" for t in tags]
  assert spans.spans_from_tags(names, pieces.offsets, text) == gold
  assert spans.unreachable_spans(gold, pieces.offsets) == 0


def test_a_multi_piece_word_gets_b_then_i_tags(tokenizer):
  text = "visit Ångström labs"
  span = Span(6, 14, "city", "Ångström")
  pieces = tokenizer.encode_batch_with_offsets([text])[0]
  tags = [TAGS[t] if t >= 0 else None for t in spans.tags_for_pieces(pieces.offsets, [span], TAG_INDEX)]
  inside = [tag for tag, (start, _) in zip(tags, pieces.offsets) if 6 <= start < 14]
  assert len(inside) >= 2 and inside[0] == "B-city" and set(inside[1:]) == {"I-city"}


def test_a_span_edge_inside_a_word_piece_is_counted_unreachable(tokenizer):
  text = "unbelievably"
  pieces = tokenizer.encode_batch_with_offsets([text])[0]
  assert spans.unreachable_spans([Span(0, 3, "org", "unb")], pieces.offsets) == 1
  assert spans.unreachable_spans([Span(0, 12, "org", text)], pieces.offsets) == 0


def test_nested_spans_keep_the_outermost_for_tagging():
  outer, inner, later = Span(0, 10, "org", "x" * 10), Span(2, 5, "city", "xxx"), Span(11, 12, "person", "y")
  assert spans.tagging_spans([inner, later, outer]) == (outer, later)


tag_sequences = st.lists(st.sampled_from(TAGS), max_size=25)


@settings(max_examples=300, deadline=None)
@given(tag_sequences)
def test_bio_chunks_read_any_sequence_as_seqeval_does(tags):
  expected = sorted((start, end + 1, label) for label, start, end in get_entities(list(tags)))
  assert sorted(spans.bio_chunks(tags)) == expected


def test_validity_of_bio_sequences():
  assert spans.is_valid_bio(["B-city", "I-city", "O", "B-org", "B-org", "I-org"])
  assert not spans.is_valid_bio(["O", "I-city"])
  assert not spans.is_valid_bio(["B-city", "I-org"])
  assert not spans.is_valid_bio(["I-city"])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(0, 9), st.integers(0, 2**31 - 1))
def test_constrained_viterbi_always_decodes_valid_bio(batch, length, seed):
  rng = np.random.default_rng(seed)
  # Scores that favour invalid I- tags, so plain per-piece argmax would often break BIO.
  scores = rng.standard_normal((batch, length, len(TAGS))) * 3
  scores[..., 2::2] += 2.0
  lengths = rng.integers(0, length + 1, batch)
  best = tagging.constrained_viterbi(scores, lengths, tagging.allowed_transitions(TAGS))
  assert best.shape == (batch, length)
  for row, n in zip(best, lengths):
    assert spans.is_valid_bio([TAGS[t] for t in row[:n]])
    assert not row[n:].any()


def test_constrained_viterbi_finds_the_best_valid_sequence_by_brute_force():
  rng = np.random.default_rng(7)
  tags = spans.tag_names(("a", "b"))
  allowed = tagging.allowed_transitions(tags)
  for _ in range(20):
    length = int(rng.integers(1, 5))
    scores = rng.standard_normal((1, length, len(tags)))
    best_score, best_seq = -np.inf, None
    for seq in itertools.product(range(len(tags)), repeat=length):
      if spans.is_valid_bio([tags[t] for t in seq]):
        score = sum(scores[0, i, t] for i, t in enumerate(seq))
        if score > best_score:
          best_score, best_seq = score, seq
    assert tuple(tagging.constrained_viterbi(scores, np.array([length]), allowed)[0]) == best_seq


def test_constrained_viterbi_repairs_what_argmax_gets_wrong():
  tags = spans.tag_names(("a",))  # O, B-a, I-a
  scores = np.log(np.array([[[0.6, 0.1, 0.3], [0.1, 0.1, 0.8]]]))  # argmax: O, I-a (invalid)
  assert tagging.constrained_viterbi(scores, np.array([2]), tagging.allowed_transitions(tags)).tolist() == [[1, 2]]
