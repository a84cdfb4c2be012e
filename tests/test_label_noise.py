"""Label-noise indicators of kept sets (`synthesis.label_noise`), on hand-made examples whose counts are known."""

from __future__ import annotations

import pytest

from msp_jax.data.schema import Example, Span
from msp_jax.synthesis import label_noise


def example(text: str, *spans: tuple[str, str]) -> Example:
  """An example whose spans are the first occurrence of each (span text, label) in `text`."""
  found = []
  for value, label in spans:
    start = text.index(value)
    found.append(Span(start, start + len(value), label, value))
  return Example("u", "d", text, spans=tuple(found))


@pytest.mark.parametrize("text,leaks", [
    ("book a room for two", False),
    ("book a room // intents: booking", True),
    ("book a room || more", True),
    ("the band toured 4) The next album", True),
    ("first line\nsecond line", True),
    ("the caf&#233; opens", True),
    ("room 4)", False),            # a closing bracket after a number that is not an exemplar cue
    ("Intents matter to us", False),
])
def test_template_leak(text, leaks):
  assert label_noise.template_leak(text) is leaks


def test_degenerate_spans_are_pronouns_or_label_names():
  names = ["date_from", "musicalartist"]
  assert label_noise.degenerate_spans(example("see it on date from now", ("it", "time"), ("date from", "date_from")),
                                      names) == 2
  assert label_noise.degenerate_spans(example("check in on 3 May", ("3 May", "date_from")), names) == 0
  assert label_noise.degenerate_spans(example("Musicalartist", ("Musicalartist", "person")), names) == 1


def test_unlabelled_capitalised_counts_runs_outside_spans_after_the_first_word():
  text = "The Beatles met Bob Dylan in New York and London"
  assert label_noise.unlabelled_capitalised(example(text, ("Bob Dylan", "person"))) == 3  # Beatles, New York, London
  assert label_noise.unlabelled_capitalised(example(text, ("Beatles", "band"), ("Bob Dylan", "person"),
                                                    ("New York", "location"), ("London", "location"))) == 0
  assert label_noise.unlabelled_capitalised(example("Paris is nice")) == 0  # the first word is not counted


def test_noise_summary_is_percent_of_examples_and_mean_per_example():
  examples = [example("a room // intents: booking"), example("see it", ("it", "x")),
              example("ask Anna and Bo", ("Anna", "person")), example("plain text")]
  summary = label_noise.noise_summary(examples, ["x"])
  assert summary == {"examples": 4, "template_leak": 25.0, "degenerate_span": 25.0, "unlabelled_capitalised": 0.25}
  assert label_noise.noise_summary([], ["x"])["template_leak"] is None


def test_is_noisy_is_template_markup_or_a_degenerate_span():
  assert label_noise.is_noisy(example("a room // intents: booking"), ["x"])
  assert label_noise.is_noisy(example("meet me at date_from", ("date_from", "date_from")), ["date_from"])
  assert not label_noise.is_noisy(example("ask Anna and Bo", ("Anna", "person")), ["person"])  # a set's property
