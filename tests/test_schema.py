"""`msp_jax.data.schema`: the one lookup from an attribute name to its prompt-table row, and seed frequencies."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from msp_jax.data.schema import Attribute, Example, Ontology, attribute_frequency
from msp_jax.errors import ConfigError


def random_ontology(rng: np.random.Generator, size: int) -> Ontology:
  names = [f"attr_{i}_{rng.integers(1_000_000)}" for i in range(size)]
  return Ontology("toy", "multi_intent", tuple(Attribute(n, "intent", n) for n in names))


@pytest.fixture()
def rng() -> np.random.Generator:
  seed = int(np.random.SeedSequence().entropy % 2**32)
  print(f"random seed: {seed}")
  return np.random.default_rng(seed)


def test_index_is_the_row_of_the_attribute(rng):
  ontology = random_ontology(rng, 9)
  for row in rng.permutation(9):
    assert ontology.index(ontology.attributes[row].name) == row


def test_unknown_name_is_a_config_error_naming_the_place_the_name_and_the_domain(rng):
  ontology = random_ontology(rng, 3)
  with pytest.raises(ConfigError) as e:
    ontology.index("teleport", where="combinations[3]")
  message = str(e.value)
  assert message.startswith("combinations[3]: attribute 'teleport' is not in the ontology of domain 'toy'")
  assert all(name in message for name in ontology.names)  # a short ontology is listed in full


def test_unknown_name_without_a_place_still_names_name_and_domain(rng):
  with pytest.raises(ConfigError, match=r"^attribute 'teleport' is not in the ontology of domain 'toy'"):
    random_ontology(rng, 3).index("teleport")


def test_a_long_ontology_is_listed_in_part_with_its_size(rng):
  ontology = random_ontology(rng, 61)
  with pytest.raises(ConfigError, match=r"\.\.\. \(61 in all\)") as e:
    ontology.index("teleport")
  assert ontology.names[0] in str(e.value) and ontology.names[-1] not in str(e.value)


def test_a_near_miss_is_suggested():
  ontology = Ontology("hotels", "multi_intent", tuple(Attribute(n, "intent", n) for n in
                                                        ("book_room", "cancel_booking", "wifi")))
  with pytest.raises(ConfigError, match=r"did you mean 'book_room'\?"):
    ontology.index("book_rom")


def test_attribute_frequency_is_the_share_of_examples_carrying_each_attribute(rng):
  ontology = random_ontology(rng, 6)
  examples = [Example(f"e{i}", "toy", "text", intents=tuple(rng.choice(ontology.names, size=rng.integers(0, 4),
                                                                         replace=False)))
              for i in range(int(rng.integers(1, 30)))]
  counts = collections.Counter(name for e in examples for name in set(e.intents))
  expected = [counts[name] / len(examples) for name in ontology.names]
  np.testing.assert_allclose(attribute_frequency(examples, ontology), expected, rtol=0, atol=1e-15)


def test_attribute_frequency_of_no_examples_is_zero(rng):
  assert attribute_frequency([], random_ontology(rng, 4)).tolist() == [0.0] * 4


def test_attribute_frequency_names_the_example_with_an_unknown_attribute(rng):
  ontology = random_ontology(rng, 4)
  with pytest.raises(ConfigError, match=r"example 'odd': attribute 'teleport' is not in the ontology"):
    attribute_frequency([Example("odd", "toy", "x", intents=("teleport",))], ontology)
