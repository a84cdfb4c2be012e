"""`msp_jax.evaluation.downstream` and `msp_jax.evaluation.baselines`: the frozen-embedding intent classifier,
the training sets and the comparison (span-preserving EDA itself: `test_eda.py`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from msp_jax.evaluation import baselines, downstream
from msp_jax.data.schema import Attribute, Example, Ontology, Span
from msp_jax.errors import ConfigError

INTENTS = ("book", "cancel", "wifi")
ONTOLOGY = Ontology("toy", "multi_intent", tuple(Attribute(n, "intent", n) for n in INTENTS)
                    + (Attribute("date", "slot", "date"),))
FAST = downstream.ClassifierConfig(hidden=32, epochs=40, batch_size=16)


def toy_features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """[n, 16] features and [n, 3] multi-hot labels: intent j is on where feature j is positive."""
  features = rng.standard_normal((n, 16)).astype(np.float32)
  return features, (features[:, :3] > 0).astype(np.float32)


def test_the_classifier_learns_a_separable_multi_label_rule():
  rng = np.random.default_rng(0)
  features, labels = toy_features(rng, 200)
  params = downstream.train_classifier(features, labels, FAST)
  test_features, test_labels = toy_features(rng, 100)
  predicted = downstream.predict(params, test_features)
  assert predicted.shape == (100, 3) and predicted.dtype == bool
  assert (predicted == test_labels.astype(bool)).mean() > 0.9
  # An untrained head (zero epochs is refused; one step of a tiny rate) is far from that.
  barely = downstream.train_classifier(features, labels, downstream.ClassifierConfig(
      hidden=32, epochs=1, batch_size=200, learning_rate=1e-6))
  assert (downstream.predict(barely, test_features) == test_labels.astype(bool)).mean() < 0.8


def test_training_is_deterministic_given_the_seed():
  features, labels = toy_features(np.random.default_rng(1), 50)
  first = downstream.train_classifier(features, labels, FAST)
  again = downstream.train_classifier(features, labels, FAST)
  other = downstream.train_classifier(features, labels, downstream.ClassifierConfig(hidden=32, epochs=40,
                                                                                     batch_size=16, seed=1))
  np.testing.assert_array_equal(first["logits"]["kernel"], again["logits"]["kernel"])
  assert not np.array_equal(first["logits"]["kernel"], other["logits"]["kernel"])


def example(uid: str, text: str, *intents: str) -> Example:
  return Example(uid, "toy", text, intents=intents, spans=(Span(0, len(text.split()[0]), "date",
                                                                text.split()[0]),))


def test_intent_targets_are_multi_hot_in_ontology_order_and_name_unknown_intents():
  labels, names = downstream.intent_targets([example("a", "x y", "wifi", "book")], ONTOLOGY)
  assert names == INTENTS and labels.tolist() == [[1.0, 0.0, 1.0]]
  with pytest.raises(ConfigError, match=r"example 'b': attribute 'sauna' is not in the ontology of domain 'toy'"):
    downstream.intent_targets([example("b", "x", "sauna")], ONTOLOGY)


def test_intent_targets_name_a_slot_given_as_an_intent():
  with pytest.raises(ConfigError, match=r"example 'c' has intent 'date'.*lists as a slot, not an intent"):
    downstream.intent_targets([example("c", "x", "date")], ONTOLOGY)


class HashEncoder:
  """A stand-in sentence encoder: a fixed random unit vector per word, averaged (deterministic)."""

  def encode(self, texts):
    def word(w):
      return np.random.default_rng(int(hashlib.sha256(w.lower().encode()).hexdigest()[:8], 16)).standard_normal(24)
    return np.stack([np.mean([word(w) for w in t.split()], 0) for t in texts]).astype(np.float32)


KEYWORDS = {"book": "reserve", "cancel": "cancel", "wifi": "internet"}


def toy_examples(prefix: str, n: int, seed: int) -> list[Example]:
  rng = np.random.default_rng(seed)
  filler = ["please", "now", "today", "hello", "thanks", "for", "me", "the", "room", "a"]
  out = []
  for i in range(n):
    intents = tuple(sorted(rng.choice(INTENTS, size=int(rng.integers(1, 3)), replace=False).tolist()))
    words = [KEYWORDS[x] for x in intents] + rng.choice(filler, size=4).tolist()
    rng.shuffle(words)
    out.append(Example(f"{prefix}/{i}", "toy", " ".join(words), intents=intents))
  return out


def test_compare_training_sets_reports_each_set_and_more_data_helps():
  seeds, synthetic, test = toy_examples("seed", 6, 0), toy_examples("syn", 60, 1), toy_examples("test", 40, 2)
  sets = baselines.training_sets(seeds, synthetic)
  report = downstream.compare_training_sets(sets, test, ONTOLOGY, HashEncoder(), FAST, repeats=2)
  assert list(report["sets"]) == [baselines.SEED_ONLY, baselines.SEED_EDA, baselines.SEED_MSP]
  assert [row["examples"] for row in report["sets"].values()] == [6, 66, 66]
  msp, seed_only = report["sets"][baselines.SEED_MSP], report["sets"][baselines.SEED_ONLY]
  assert len(msp["f1_runs"]) == 2 and 0 <= seed_only["f1_mean"] <= 100
  assert msp["f1_mean"] > seed_only["f1_mean"]  # 66 clean examples beat 6 on a keyword rule
  again = downstream.compare_training_sets(sets, test, ONTOLOGY, HashEncoder(), FAST, repeats=2)
  assert again == report
  table = downstream.format_report(report)
  assert "seed + MSP" in table and f"{msp['f1_mean']:.1f}" in table


def test_downstream_refuses_tasks_it_has_no_model_for_and_empty_test_sets():
  ner = Ontology("politics", "ner", (Attribute("person", "entity", "person"),))
  seeds = toy_examples("seed", 3, 0)
  with pytest.raises(ConfigError, match=r"'politics' is a 'ner' task"):
    downstream.compare_training_sets({"seed only": seeds}, seeds, ner, HashEncoder())
  with pytest.raises(ConfigError, match=r"no test examples"):
    downstream.compare_training_sets({"seed only": seeds}, [], ONTOLOGY, HashEncoder())


def test_eda_copies_keep_intents_and_span_labels_and_are_deterministic():
  seeds = [example("s0", "book a double room for Friday please", "book"),
           example("s1", "wifi", "wifi"), example("s2", "cancel my booking and the parking", "cancel", "book")]
  copies = baselines.training_sets(seeds, [seeds[0]] * 7, seed=3)[baselines.SEED_EDA][3:]
  assert copies == baselines.training_sets(seeds, [seeds[0]] * 7, seed=3)[baselines.SEED_EDA][3:]
  assert copies != baselines.training_sets(seeds, [seeds[0]] * 7, seed=4)[baselines.SEED_EDA][3:]
  assert [c.intents for c in copies] == [seeds[i % 3].intents for i in range(7)]
  assert all([s.label for s in c.spans] == ["date"] for c in copies) and len({c.uid for c in copies}) == 7


def test_training_sets_add_equally_many_eda_copies_as_synthetic_examples():
  seeds, synthetic = toy_examples("seed", 4, 0), toy_examples("syn", 9, 1)
  sets = baselines.training_sets(seeds, synthetic)
  assert sets[baselines.SEED_ONLY] == seeds
  assert sets[baselines.SEED_EDA][:4] == seeds and len(sets[baselines.SEED_EDA]) == 13
  assert sets[baselines.SEED_MSP] == seeds + synthetic


def test_bad_classifier_settings_are_named():
  with pytest.raises(ConfigError, match=r"ClassifierConfig.epochs=0"):
    downstream.ClassifierConfig(epochs=0)
  with pytest.raises(ConfigError, match=r"ClassifierConfig.threshold=1.5"):
    downstream.ClassifierConfig(threshold=1.5)
