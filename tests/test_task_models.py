"""Fine-tuned task models (`evaluation.task_models`, `heads`, `compare`): each head learns a toy rule, training
is deterministic, predictions are exported and re-scored, bad input gets one clear error.

The encoder here is a small randomly initialised BERT with the real MiniLM WordPiece tokenizer (offsets and all),
so the tests train in seconds; `benchmarks/downstream.py` and the sanity figures use the real weights.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from msp_jax.data import topv2
from msp_jax.data.schema import Attribute, Example, Ontology, Span
from msp_jax.encoders import bert, minilm_weights
from msp_jax.encoders.wordpiece import WordPieceTokenizer
from msp_jax.errors import ConfigError, DataError
from msp_jax.evaluation import baselines, compare, heads, predictions, spans, task_models
from msp_jax.evaluation.heads import LabelSpace
from msp_jax.evaluation.task_models import PretrainedEncoder, TaskModelConfig, predict, train

TINY = bert.BertConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
FAST = TaskModelConfig(learning_rate=2e-3, head_learning_rate=1e-2, max_epochs=25, patience=25, batch_size=16,
                       dropout=0.0, max_buckets=2)
FILLER = "please now the a for me today thanks hello could you tell about it there and".split()
PEOPLE = ["Alice Smith", "Bob", "Chen Wei", "María José"]
CITIES = ["Paris", "New York", "Zürich", "São Paulo"]
BUCKETS = (24,)
INTENTS = {"weather": ("weather", "rain"), "alarm": ("alarm", "wake"), "music": ("song", "play")}


@pytest.fixture(scope="module")
def encoder() -> PretrainedEncoder:
  """The tiny BERT with N(0, 0.02) weights, unit LayerNorm scales (built in NumPy: Flax's init is slow here)."""
  tokenizer = WordPieceTokenizer(minilm_weights.minilm_model_dir() / "tokenizer.json", TINY.max_seq_length)
  shapes = jax.eval_shape(lambda: bert.init_params(TINY, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: np.ones(x.shape, np.float32) if path[-1].key == "scale"
      else (0.02 * rng.standard_normal(x.shape)).astype(np.float32), shapes)
  return PretrainedEncoder(TINY, params, tokenizer)


def sentence(rng: np.random.Generator, mentions: list[tuple[str, str]]) -> tuple[str, tuple[Span, ...]]:
  """Filler words with the (text, label) mentions at random places; spans as character offsets."""
  parts: list[tuple[str, str | None]] = [(w, None) for w in rng.choice(FILLER, size=int(rng.integers(3, 7)))]
  for mention in mentions:
    parts.insert(int(rng.integers(len(parts) + 1)), mention)
  text, found = "", []
  for word, label in parts:
    text += " " if text else ""
    if label:
      found.append(Span(len(text), len(text) + len(word), label, word))
    text += word
  return text, tuple(found)


def ner_examples(n: int, seed: int) -> list[Example]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    mentions = [(str(rng.choice(PEOPLE)), "person")] * int(rng.integers(0, 2))
    mentions += [(str(rng.choice(CITIES)), "city")] * int(rng.integers(0, 3))
    text, found = sentence(rng, mentions)
    out.append(Example(f"ner{seed}/{i}", "toy", text, spans=found))
  return out


def intent_examples(n: int, seed: int) -> list[Example]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    intents = tuple(sorted(rng.choice(list(INTENTS), size=int(rng.integers(1, 3)), replace=False).tolist()))
    mentions = [(str(rng.choice(INTENTS[x])), None) for x in intents]
    mentions += [(str(rng.choice(CITIES)), "city")] * int(rng.integers(0, 2))
    text, found = sentence(rng, [(w, l) for w, l in mentions])
    out.append(Example(f"int{seed}/{i}", "toy", text, intents=intents, spans=found))
  return out


def parse_examples(n: int, seed: int) -> list[Example]:
  """Flat TOP parses: the root intent from a keyword, a location slot over a city."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    intent = str(rng.choice(list(INTENTS)))
    words = list(rng.choice(FILLER, size=int(rng.integers(2, 5)))) + [str(rng.choice(INTENTS[intent]))]
    rng.shuffle(words)
    if rng.random() < 0.7:
      words.insert(int(rng.integers(len(words) + 1)), f"[SL:LOCATION {rng.choice(CITIES)} ]")
    parse = f"[IN:{intent.upper()} {' '.join(words)} ]"
    out.append(topv2.example_from_parse(parse, uid=f"top{seed}/{i}", domain="toy"))
  return out


NER = Ontology("toy", "ner", (Attribute("person", "entity", "person"), Attribute("city", "entity", "city")))
MULTI = Ontology("toy", "multi_intent", tuple(Attribute(n, "intent", n) for n in INTENTS)
                 + (Attribute("city", "slot", "city"),))
TOP = Ontology("toy", "semantic_parse", tuple(Attribute(f"IN:{n.upper()}", "intent", n) for n in INTENTS)
               + (Attribute("SL:LOCATION", "slot", "location"),))


def fit(examples, ontology, config, encoder, validation=()):
  """`train` with one bucket length for every toy set, so the tests share compiled steps."""
  return train(examples, LabelSpace.of(ontology), config, encoder, validation, buckets=BUCKETS)


def scores(model, examples, encoder, task):
  return predictions.score_rows([predictions.row(e, p) for e, p in zip(examples, predict(model, examples, encoder))],
                                task)


def test_the_tagger_learns_a_toy_entity_rule_and_decodes_valid_spans(encoder):
  model = fit(ner_examples(160, 0), NER, FAST, encoder)
  test = ner_examples(60, 1)
  assert scores(model, test, encoder, "ner")["entity_f1"] > 90
  untrained = fit(ner_examples(160, 0), NER, dataclasses.replace(FAST, max_epochs=1,
                                                                                   learning_rate=1e-6,
                                                                                   head_learning_rate=1e-6), encoder)
  assert scores(untrained, test, encoder, "ner")["entity_f1"] < 50


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_the_multi_label_intent_head_and_slot_tagger_learn_a_keyword_rule(encoder, compute_dtype):
  model = fit(intent_examples(200, 0), MULTI, dataclasses.replace(FAST, compute_dtype=compute_dtype), encoder)
  result = scores(model, intent_examples(60, 1), encoder, "multi_intent")
  assert result["intent_f1"] > 90 and result["slot_f1"] > 90
  predicted = predict(model, intent_examples(60, 1), encoder)
  assert any(len(p["intents"]) == 2 for p in predicted)  # several sigmoids fire together


def test_the_single_label_head_and_tagger_write_exact_top_parses(encoder):
  model = fit(parse_examples(200, 0), TOP, FAST, encoder)
  test = parse_examples(60, 1)
  result = scores(model, test, encoder, "semantic_parse")
  assert result["intent_accuracy"] > 95 and result["exact_match"] > 85
  for p in predict(model, test[:10], encoder):
    assert len(p["intents"]) == 1 and topv2.parse_top(p["parse"]).root.label == p["intents"][0]


def test_a_prediction_does_not_depend_on_the_examples_predicted_beside_it(encoder):
  """Prediction calls are sized to the examples there are (`_eval_rows`): 3 examples take an 8-row call, 200
  take 128-row calls. The scores of an example agree to float32 rounding either way (XLA may order a sum
  differently for another row count), and its predicted labels are the same."""
  model = fit(intent_examples(60, 0), MULTI, dataclasses.replace(FAST, max_epochs=2), encoder)
  _, _, predict_step = task_models._steps(encoder.config, True, "float32")
  data = task_models.encode(intent_examples(200, 5), LabelSpace.of(MULTI), encoder.tokenizer)
  rows = np.arange(5)
  outputs = [jax.device_get(predict_step(model.params, None, b["ids"], b["mask"]))
             for b in (task_models._batch(data, rows, size, 24, encoder.tokenizer.pad_id) for size in (8, 128))]
  for small, large in zip(*outputs):
    np.testing.assert_allclose(small[:5], large[:5], rtol=1e-5, atol=1e-6)
  assert task_models._eval_rows(24, 3) == 8 and task_models._eval_rows(24, 20) == 32
  assert task_models._eval_rows(24, 5000) == 128 and task_models._eval_rows(512, 5000) == 8
  examples = intent_examples(200, 5)
  assert predict(model, examples[:3], encoder) == predict(model, examples, encoder)[:3]


def test_training_is_deterministic_given_the_seed_and_differs_across_seeds(encoder):
  examples, config = ner_examples(40, 2), dataclasses.replace(FAST, max_epochs=2, dropout=0.1)
  first = fit(examples, NER, config, encoder)
  again = fit(examples, NER, config, encoder)
  other = fit(examples, NER, dataclasses.replace(config, seed=1), encoder)
  leaves = lambda m: jax.tree_util.tree_leaves(m.params)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(first), leaves(again)))
  assert not all(np.array_equal(a, b) for a, b in zip(leaves(first), leaves(other)))


def test_model_selection_keeps_the_best_validation_epoch_and_stops_early(encoder):
  config = dataclasses.replace(FAST, max_epochs=25, patience=2)
  model = fit(ner_examples(120, 3), NER, config, encoder, validation=ner_examples(30, 4))
  history = [h["validation"] for h in model.history]
  assert model.best_epoch == 1 + int(np.argmax(history))
  assert len(history) == min(25, model.best_epoch + 2)
  best = fit(ner_examples(120, 3), NER, dataclasses.replace(config, max_epochs=model.best_epoch,
                                                                             patience=99), encoder)
  assert len(best.history) == model.best_epoch


def test_compare_writes_predictions_per_model_and_the_report_recomputes_from_them(encoder, tmp_path):
  seeds, synthetic = ner_examples(24, 5), ner_examples(48, 6)
  sets = baselines.training_sets(seeds, synthetic)
  config = dataclasses.replace(FAST, max_epochs=3)
  report = compare.compare_training_sets(sets, ner_examples(10, 7), ner_examples(20, 8), NER, config, repeats=2,
                                         out_dir=tmp_path, encoder=encoder)
  compare.write_report(tmp_path, report)
  saved = json.loads((tmp_path / compare.REPORT_FILE).read_text())
  assert list(saved["sets"]) == [baselines.SEED_ONLY, baselines.SEED_EDA, baselines.SEED_MSP]
  for row in saved["sets"].values():
    assert len(row["runs"]) == 2
    for run in row["runs"]:
      rows = predictions.read(tmp_path / run["predictions"])
      assert len(rows) == 20 and set(rows[0]) == {"uid", "text", "gold", "predicted"}
      assert predictions.score_rows(rows, "ner") == run["scores"]
      # the kept epoch's validation score, the one the model was selected on
      assert abs(run["validation"] - run["validation_scores"]["entity_f1"]) <= 0.005 and 1 <= run["best_epoch"] <= 3
      for r in rows:
        assert all(r["text"][s:e] for s, e, _ in r["predicted"]["spans"])
    assert row["mean"]["entity_f1"] == pytest.approx(np.mean([r["scores"]["entity_f1"] for r in row["runs"]]))
  table = compare.format_report(report)
  assert "entity F1" in table and "seed + MSP" in table
  assert f"{report['sets']['seed + EDA']['mean']['entity_f1']:.1f}" in table


def test_the_seed_only_model_does_not_move_with_the_other_training_sets(encoder, tmp_path):
  seeds, validation, test = ner_examples(24, 5), ner_examples(8, 7), ner_examples(12, 8)
  longer = [dataclasses.replace(e, uid=f"long/{e.uid}", text=e.text + " and " + " ".join(FILLER))
            for e in ner_examples(20, 6)]
  config = dataclasses.replace(FAST, max_epochs=2, dropout=0.1)
  alone = compare.compare_training_sets({"seed only": seeds}, validation, test, NER, config, repeats=1,
                                        out_dir=tmp_path / "a", encoder=encoder)
  beside = compare.compare_training_sets({"seed only": seeds, "seed + long": seeds + longer}, validation, test,
                                         NER, config, repeats=1, out_dir=tmp_path / "b", encoder=encoder)
  assert (tmp_path / "a/seed_only/seed0/predictions.jsonl").read_bytes() == \
         (tmp_path / "b/seed_only/seed0/predictions.jsonl").read_bytes()
  assert alone["sets"]["seed only"]["runs"][0]["scores"] == beside["sets"]["seed only"]["runs"][0]["scores"]
  buckets = compare.shared_buckets({"s": seeds, "l": seeds + longer}, validation, test, LabelSpace.of(NER),
                                   encoder, 2)
  assert len(buckets) == 3 and buckets[-1] % 8 == 0  # one more bucket for the longer set


def test_the_table_shows_the_task_scores_and_the_topv2_ceiling():
  report = {"task": "semantic_parse", "domain": "weather", "test_examples": 3, "repeats": 1,
            "ceiling": {"parses": 3.0, "nested": 1.0, "ceiling": 66.67},
            "sets": {"seed only": {"examples": 5, "mean": {"exact_match": 33.3, "intent_accuracy": 66.7,
                                                           "slot_f1": 50.0},
                                   "std": {"exact_match": 0.0, "intent_accuracy": 0.0, "slot_f1": 0.0}}}}
  table = compare.format_report(report)
  assert "exact match" in table and "intent acc." in table and "slot F1" in table
  assert "1 of 3 test parses are nested" in table


def test_test_labels_absent_from_the_ontology_are_named(encoder):
  bad = Example("test/7", "toy", "fly to Rome", spans=(Span(7, 11, "airport", "Rome"),))
  with pytest.raises(DataError, match=r"test example 'test/7' has labels \['airport'\].*domain 'toy'"):
    compare.compare_training_sets({"seed only": ner_examples(4, 0)}, [], [bad], NER, FAST, 1, encoder=encoder)


def test_an_empty_training_set_is_named(encoder):
  with pytest.raises(ConfigError, match=r"'seed \+ MSP' training set of domain 'toy' is empty"):
    compare.compare_training_sets({"seed + MSP": []}, [], ner_examples(3, 0), NER, FAST, 1, encoder=encoder)


def test_a_span_outside_its_text_is_named(encoder):
  bad = Example("seed/3", "toy", "Paris", spans=(Span(0, 9, "city", "Paris now"),))
  with pytest.raises(DataError, match=r"training example 'seed/3': span \[0, 9\) 'city'.*outside the text"):
    fit([bad], NER, FAST, encoder)


def test_a_domain_without_labels_or_an_unknown_task_kind_is_refused():
  with pytest.raises(ConfigError, match="nothing to predict"):
    LabelSpace.of(Ontology("empty", "ner", ()))
  with pytest.raises(ConfigError, match="unknown task kind 'tagging'"):
    LabelSpace.of(Ontology("odd", "tagging", (Attribute("x", "slot", "x"),)))  # type: ignore[arg-type]


def test_bio_targets_skip_special_pieces_and_follow_the_spans(encoder):
  example = ner_examples(1, 9)[0]
  space = LabelSpace.of(NER)
  pieces = encoder.tokenizer.encode_batch_with_offsets([example.text])[0]
  tags = spans.tags_for_pieces(pieces.offsets, example.spans, space.tag_index)
  names = [space.tags[t] for t in tags[1:-1]]
  assert spans.spans_from_tags(names, pieces.offsets[1:-1], example.text) == example.spans


def test_the_intent_biases_start_at_the_training_base_rates():
  prior = np.array([0.5, 0.1, 0.0])
  multi = heads.init_heads(LabelSpace.of(MULTI), 8, np.random.default_rng(0), prior)
  np.testing.assert_allclose(jax.nn.sigmoid(multi["intent"]["bias"]), [0.5, 0.1, 1e-3], rtol=1e-5)
  single = heads.init_heads(LabelSpace.of(TOP), 8, np.random.default_rng(0), np.array([0.7, 0.3, 0.0]))
  np.testing.assert_allclose(np.exp(single["intent"]["bias"]), [0.7, 0.3, 1e-3], rtol=1e-5)
  assert single["tags"]["kernel"].shape == (8, 3) and not np.any(single["tags"]["bias"])
