"""TOPv2 flat parses (`evaluation.topv2_parse`): writing root intent + slots back as a TOP parse string."""

from __future__ import annotations

import pytest

from msp_jax.data import topv2
from msp_jax.data.schema import Span
from msp_jax.evaluation import topv2_parse

FLAT = "[IN:GET_WEATHER What 's the [SL:WEATHER_ATTRIBUTE high ] for [SL:DATE_TIME next week ] in " \
       "[SL:LOCATION Cape May , NJ ] ? ]"
NESTED = "[IN:GET_WEATHER weather [SL:LOCATION [IN:GET_LOCATION [SL:LOCATION_USER here ] ] ] ]"


def test_a_flat_parse_round_trips_through_its_example():
  example = topv2.example_from_parse(FLAT, uid="u", domain="weather", text="What's the high for next week in "
                                     "Cape May, NJ?")
  assert topv2_parse.example_parse(example, topv2_parse.root_intent(example), example.spans) == FLAT


def test_every_flat_parse_of_the_weather_test_split_round_trips_and_two_are_nested(data_dir):
  examples, _ = topv2.read_topv2_file(data_dir / "topv2" / "weather_test.tsv", "weather", uid_prefix="t")
  for example in examples:
    if topv2_parse.is_flat(example.parse):
      rebuilt = topv2_parse.example_parse(example, topv2_parse.root_intent(example), example.spans)
      assert rebuilt == " ".join(example.parse.split())
  ceiling = topv2_parse.flat_ceiling(examples)
  assert (ceiling["nested"], ceiling["parses"]) == (2, 5682)
  assert ceiling["ceiling"] == pytest.approx(100 * 5680 / 5682)


def test_nested_and_empty_slots_are_not_flat():
  assert topv2_parse.is_flat(FLAT)
  assert not topv2_parse.is_flat(NESTED)
  assert not topv2_parse.is_flat("[IN:GET_WEATHER weather [SL:DATE_TIME ] ]")


def test_predicted_spans_snap_to_whole_words_and_overlaps_keep_the_first():
  words = ("will", "it", "rain", "in", "New", "York", "?")
  offsets = topv2.align_words("will it rain in New York?", words)
  spans = [Span(9, 12, "SL:WEATHER_ATTRIBUTE", "ain"),          # inside 'rain': covers the word
           Span(16, 24, "SL:LOCATION", "New York"),
           Span(20, 24, "SL:DATE_TIME", "York")]                 # shares 'York' with the location: dropped
  assert topv2_parse.flat_parse("IN:GET_WEATHER", words, offsets, spans) == \
      "[IN:GET_WEATHER will it [SL:WEATHER_ATTRIBUTE rain ] in [SL:LOCATION New York ] ? ]"


def test_words_without_a_gold_parse_split_punctuation_and_contractions():
  example = topv2.example_from_parse("[IN:GET_WEATHER x ]", uid="u", domain="weather")
  example = type(example)(uid="u", domain="weather", text="What's it like in Cape May, NJ?", intents=example.intents)
  words, offsets = topv2_parse.parse_words(example)
  assert words == ("What", "'s", "it", "like", "in", "Cape", "May", ",", "NJ", "?")
  assert [example.text[s:e] for s, e in offsets] == list(words)
