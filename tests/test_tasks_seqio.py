"""SeqIO tasks registered by `import tasks`: benchmark counts and fields, few-shot variants, metrics, and
the `TokenizerVocabulary` that lets decoder-only (BPE) tokenizers feed SeqIO."""

from __future__ import annotations

import os
import pathlib
import random
import string
import warnings

T5_VOCAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "t5_vocab" / "sentencepiece.model"
# Read when `tasks` is imported; the fixture copy stands in for the public T5 vocabulary.
os.environ.setdefault("MSP_T5_VOCAB", str(T5_VOCAB))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

import tasks  # noqa: E402
from msp_jax.data import catalog, fewshot, serialization  # noqa: E402
from tasks import registration  # noqa: E402
from tasks.vocabularies import TokenizerVocabulary  # noqa: E402


@pytest.fixture(autouse=True)
def _benchmark_data(data_dir, monkeypatch):
  monkeypatch.setenv("MSP_DATA_DIR", str(data_dir))


def _rows(name: str, split: str) -> list[dict]:
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=None, split=split, shuffle=False)
  return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("name, split, expected", [
    ("nlupp_hotels", "validation", 95),      # folds 0-1: 47 + 48
    ("crossner_ai", "validation", 350),      # ai/dev.txt
    ("topv2_weather", "fewshot_train", 176),  # low_resource_splits/weather_train_25spis.tsv
])
def test_benchmark_split_sizes_match_the_readme(name, split, expected):
  assert len(_rows(name, split)) == expected


def test_benchmark_fields_decode_to_text_and_serialised_target(data_dir):
  data = catalog.load_task_data("nlupp_hotels", data_dir)
  examples = data.splits["validation"]
  rows = _rows("nlupp_hotels", "validation")
  vocab = seqio.get_mixture_or_task("nlupp_hotels").output_features["targets"].vocabulary
  assert len(rows) == len(examples)
  for row, example in zip(rows, examples):
    assert row["uid"].decode() == example.uid
    assert [a.decode() for a in row["attributes"]] == list(example.attributes)
    # The TF pipeline tokenises exactly like the Python SentencePiece model, then appends EOS.
    assert row["inputs"].tolist() == list(vocab.encode(example.text)) + [vocab.eos_id]
    target = serialization.serialize(example, "multi_intent")
    assert row["targets"].tolist() == list(vocab.encode(target)) + [vocab.eos_id]


def test_smollm2_task_tokenises_with_the_gguf_bpe():
  rows = _rows("crossner_ai_smollm2", "validation")
  examples = registration.benchmark_loader("crossner_ai")().splits["validation"]
  assert len(rows) == len(examples)
  vocab = seqio.get_mixture_or_task("crossner_ai_smollm2").output_features["targets"].vocabulary
  tokenizer = vocab.tokenizer  # the SmolLM2 GGUF tokenizer (msp_jax.backbones.gguf_checkpoint)
  assert tokenizer.vocab_size == 49152
  for row, example in zip(rows[:20], examples):
    target = serialization.serialize(example, "ner")
    assert row["targets"].tolist() == tokenizer.encode(target) + [tokenizer.eos_id]
    assert vocab.decode(row["targets"].tolist()) == target


def test_topv2_targets_are_the_parse():
  rows = _rows("topv2_weather_fewshot", "validation")
  examples = registration.benchmark_loader("topv2_weather")().splits["fewshot_validation"]
  assert len(rows) == len(examples) == 147
  vocab = seqio.get_mixture_or_task("topv2_weather").output_features["targets"].vocabulary
  for row, example in zip(rows[:10], examples[:10]):
    assert vocab.decode(row["targets"].tolist()) == example.parse


def test_fewshot_task_train_is_the_fewshot_seed_set(data_dir):
  data = catalog.load_task_data("nlupp_hotels", data_dir)
  seeds = fewshot.few_shot(data)
  rows = _rows("nlupp_hotels_fewshot", "train")
  assert [r["uid"].decode() for r in rows] == [e.uid for e in seeds]
  assert len(rows) < len(data.splits["train"])
  assert len(_rows("nlupp_hotels_fewshot", "test")) == len(data.splits["test"])


def test_every_benchmark_task_is_registered_for_both_vocabularies():
  names = set(seqio.TaskRegistry.names())
  for domain_task in ("nlupp_banking", "crossner_conll2003", "topv2_alarm", "topv2_reminder"):
    assert {domain_task, f"{domain_task}_smollm2"} <= names
  assert {"topv2_reminder_fewshot", "crossner_music_fewshot_smollm2"} <= names
  assert "topv2_alarm_fewshot" not in names  # TOPv2 ships low-resource files for reminder/weather only
  t5 = seqio.get_mixture_or_task("nlupp_banking").output_features["inputs"].vocabulary
  bpe = seqio.get_mixture_or_task("nlupp_banking_smollm2").output_features["inputs"].vocabulary
  assert isinstance(t5, seqio.SentencePieceVocabulary) and t5.vocab_size == 32100
  assert isinstance(bpe, TokenizerVocabulary)


@pytest.mark.parametrize("domain_task, vocabulary, fewshot_variant, expected", [
    ("nlupp_hotels", "t5", False, "nlupp_hotels"),
    ("nlupp_hotels", "smollm2", True, "nlupp_hotels_fewshot_smollm2"),
])
def test_task_name_spells_registered_names(domain_task, vocabulary, fewshot_variant, expected):
  name = tasks.task_name(domain_task, vocabulary, fewshot=fewshot_variant)
  assert name == expected and name in seqio.TaskRegistry.names()


def test_metric_fn_scores_the_serialised_strings(data_dir):
  task = seqio.get_mixture_or_task("crossner_ai")
  (metric_fn,) = task.predict_metric_fns
  examples = catalog.load_task_data("crossner_ai", data_dir).splits["validation"][:20]
  targets = [serialization.serialize(e, "ner") for e in examples]
  perfect = metric_fn(targets, targets)
  assert perfect["entity_f1"] == pytest.approx(100.0)
  plain = metric_fn(targets, [e.text for e in examples])  # no entities predicted
  assert plain["entity_recall"] == 0.0


# --- TokenizerVocabulary over a tiny byte-level BPE built here -------------------------------------

class _TinyBpe:
  """A `Tokenizer` around a `tokenizers` byte-level BPE trained on a few sentences (ids 0/1 = pad/eos)."""

  pad_id, eos_id, bos_id = 0, 1, None

  def __init__(self):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    self._tok = Tokenizer(models.BPE())
    self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    self._tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["book a double room for friday", "cancel my booking please", "[suite | room_type]",
              "what is the weather like tomorrow", "|| intents: book_room, check_in"] * 20
    self._tok.train_from_iterator(corpus, trainer)
    self.vocab_size = self._tok.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def decode(self, ids) -> str:
    return self._tok.decode(list(ids), skip_special_tokens=False)


@pytest.fixture(scope="module")
def bpe_vocab() -> TokenizerVocabulary:
  return TokenizerVocabulary(_TinyBpe(), name="tiny-bpe")


def _random_texts(n: int) -> list[str]:
  rng = random.Random()
  alphabet = string.ascii_letters + string.digits + " []|,.:'?é"
  return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def test_tokenizer_vocabulary_tf_encoding_matches_python(bpe_vocab):
  for text in _random_texts(10):
    eager = bpe_vocab.encode_tf(tf.constant(text)).numpy().tolist()
    assert eager == bpe_vocab.encode(text)
    assert bpe_vocab.decode(eager) == text


def test_tokenizer_vocabulary_decode_tf_stops_at_eos_and_drops_padding(bpe_vocab):
  texts = _random_texts(3)
  width = max(len(bpe_vocab.encode(t)) for t in texts) + 4
  ids = np.zeros([len(texts), width], np.int32)  # seqio pads with 0
  for row, text in enumerate(texts):
    encoded = bpe_vocab.encode(text) + [bpe_vocab.eos_id]
    ids[row, :len(encoded)] = encoded
    ids[row, len(encoded):len(encoded) + 1] = 5  # junk after EOS must not be decoded
  decoded = bpe_vocab.decode_tf(tf.constant(ids)).numpy().tolist()
  assert [d.decode() for d in decoded] == texts


def test_tokenizer_vocabulary_feeds_a_seqio_task(bpe_vocab):
  tasks.add_vocabulary("tinybpe", bpe_vocab, overwrite=True)
  rows = _rows("nlupp_hotels_tinybpe", "validation")
  data = registration.benchmark_loader("nlupp_hotels")()
  for row, example in zip(rows[:10], data.splits["validation"]):
    assert bpe_vocab.decode(row["targets"].tolist()) == serialization.serialize(example, "multi_intent")
    assert bpe_vocab.decode(row["inputs"].tolist()) == example.text


# --- synthetic sets registered under $MSP_HOME ---------------------------------------------------------

def test_persisted_synthetic_set_is_found_by_name_and_registered(tmp_path, monkeypatch):
  from msp_jax import files
  from msp_jax.data import registry
  from msp_jax.synthesis import export

  monkeypatch.setenv("MSP_HOME", str(tmp_path / "home"))
  rng = random.Random()
  domain = catalog.load_task_data("front_desk")
  kept = rng.sample(domain.splits["validation"], 4)
  seeds = rng.sample(domain.splits["train"], 6)
  export.write_jsonl(tmp_path / "synthetic.jsonl",
                     [export.SyntheticRecord(e, rng.random(), seeds[0].uid, False, {"seed": 0}) for e in kept])
  files.write_jsonl_rows(tmp_path / "seeds.jsonl", (export.example_to_dict(e) for e in seeds))
  name = f"fd_synthetic_{rng.randrange(10**8)}"
  registry.persist_synthetic(registry.SyntheticSet(name, tmp_path / "synthetic.jsonl", tmp_path / "seeds.jsonl",
                                                   source_task="front_desk", task_kind="multi_intent"))
  # The catalog reads both halves by name, labelled with the source domain's ontology.
  synthetic, seed_set = catalog.load_task_data(name), catalog.load_task_data(f"{name}_seeds")
  assert synthetic.splits == {"train": tuple(kept)} and seed_set.splits == {"train": tuple(seeds)}
  assert synthetic.ontology == seed_set.ontology == domain.ontology
  # What `import tasks` does for every pointer in a later process.
  names = tasks.register_persisted_synthetic()
  assert {name, f"{name}_smollm2", f"{name}_seeds", f"{name}_seeds_smollm2", f"{name}_mixture",
          f"{name}_mixture_smollm2"} <= set(names)
  assert [r["uid"].decode() for r in _rows(name, "train")] == [e.uid for e in kept]
  mixed = seqio.get_mixture_or_task(f"{name}_mixture")
  assert sorted(t.name for t in mixed.tasks) == [name, f"{name}_seeds"]


def test_a_synthetic_set_whose_records_are_gone_is_skipped_with_one_warning_line(tmp_path, monkeypatch):
  """A pointer left behind by a run whose folder was deleted: `import tasks` goes on, and the command line
  prints one line naming the pointer and the missing file (no source file and line of ours)."""
  from msp_jax import cli
  from msp_jax.data import registry

  monkeypatch.setenv("MSP_HOME", str(tmp_path / "home"))
  pointer = registry.persist_synthetic(registry.SyntheticSet(
      "gone_synthetic", tmp_path / "deleted" / "synthetic.jsonl", tmp_path / "deleted" / "seeds.jsonl",
      source_task="front_desk", task_kind="multi_intent"))
  with pytest.warns(UserWarning) as caught:
    assert tasks.register_persisted_synthetic() == []
  assert len(caught) == 1
  w = caught[0]
  line = cli.one_line_warning(w.message, w.category, w.filename, w.lineno)
  assert line == f"warning: skipping synthetic set {pointer}: DataError: synthetic records file " \
                 f"'{tmp_path / 'deleted' / 'synthetic.jsonl'}' does not exist\n"
  monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  assert warnings.formatwarning is cli.one_line_warning
