"""`msp_jax.encoders.wordpiece`: word pieces and their character offsets against a pure-Python BERT tokenizer.

The reference below re-implements BERT's published tokenisation (clean text, space out CJK characters,
strip accents, lower-case, split at whitespace and punctuation, greedy longest-match WordPiece) on the
wheel's `vocab.txt`, tracking the original character of every normalised one. It shares no code with the
`tokenizers` package our tokenizer runs.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pytest

from msp_jax.encoders.minilm_weights import minilm_model_dir
from msp_jax.encoders.wordpiece import WordPieces, WordPieceTokenizer
from msp_jax.errors import CheckpointError

MAX_LENGTH = 256
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

WORDS = ("Book", "a", "ROOM", "for", "two", "nights", "unbelievably", "checkout", "Transfer", "wifi", "New",
         "York", "Nobel", "supercalifragilisticexpialidocious", "x" * 120)
UNICODE = ("Crème", "brûlée", "naïve", "São", "Paulo", "İstanbul", "ﬁne", "Straße", "ΟΔΟΣ", "Ελληνικά",
           "русский", "北京欢迎你", "東京タワー", "한국어", "😀", "👍🏽", "👨\u200d👩\u200d👧", "e\u0301te\u0301",
           "N°5", "€5", "x\u200by", "soft\u00adhyphen", "ǅ", "٣٤٥")
PUNCTUATION = ("!", "?", ".", ",", "'", "\"", "(", ")", "$1,000.50", "3.14", "don't", "e-mail@example.com",
               "https://example.org/a?b=c", "C++", "#tag", "—", "…", "“", "”", "«", "»", "¿", "¡", "。", "、",
               "12:30pm", "[CLS]", "##ing")
SPECIAL_TOKEN = re.compile(r"(\[(?:PAD|UNK|CLS|SEP|MASK)\])")  # kept by re.split
SPACES = (" ", " ", " ", "  ", "\t", "\n", "\u00a0", "\u3000", " \r\n ")


def is_control(char: str) -> bool:
  return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_whitespace(char: str) -> bool:
  return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_punctuation(char: str) -> bool:
  cp = ord(char)
  return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or (
      unicodedata.category(char).startswith("P"))


def reference_words(text: str, base: int) -> list[list[tuple[str, int]]]:
  """BERT's basic tokenizer: words as [(normalised character, index of the original character it came from)]."""
  words, word = [], []

  def end_word():
    if word:
      words.append(list(word))
      word.clear()

  for index, char in enumerate(text, start=base):
    if ord(char) in (0, 0xFFFD) or is_control(char):
      continue
    if is_whitespace(char):
      end_word()
      continue
    isolated = is_punctuation(char) or any(lo <= ord(char) <= hi for lo, hi in CJK_RANGES)
    if isolated:
      end_word()
    for normalised in unicodedata.normalize("NFD", char):  # accents stripped, then lower-cased
      if unicodedata.category(normalised) != "Mn":
        word.extend((c, index) for c in normalised.lower())
    if isolated:
      end_word()
  end_word()
  return words


def reference_word_pieces(word: list[tuple[str, int]], vocab: dict[str, int], unk_id: int
                          ) -> list[tuple[int, tuple[int, int]]]:
  """Greedy longest-match WordPiece: [(id, (start, end))]; one [UNK] for a word it cannot cover."""
  chars = "".join(c for c, _ in word)
  pieces, start = [], 0
  while start < len(chars) and len(chars) <= 100:  # BERT's max_input_chars_per_word
    prefix = "##" if start else ""
    end = next((e for e in range(len(chars), start, -1) if prefix + chars[start:e] in vocab), None)
    if end is None:
      break
    pieces.append((vocab[prefix + chars[start:end]], (word[start][1], word[end - 1][1] + 1)))
    start = end
  if start < len(chars) or not pieces:
    return [(unk_id, (word[0][1], word[-1][1] + 1))]
  return pieces


def reference_pieces(text: str, vocab: dict[str, int], unk_id: int) -> list[tuple[int, tuple[int, int]]]:
  """(id, (start, end)) of every word piece of `text`, no [CLS]/[SEP], no truncation. Special-token strings
  in the text are those tokens, matched verbatim before normalisation."""
  pieces, start = [], 0
  for index, part in enumerate(SPECIAL_TOKEN.split(text)):  # text, special, text, special, ..., text
    if index % 2:
      pieces.append((vocab[part], (start, start + len(part))))
    else:
      for word in reference_words(part, base=start):
        pieces.extend(reference_word_pieces(word, vocab, unk_id))
    start += len(part)
  return pieces


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
  return WordPieceTokenizer(minilm_model_dir() / "tokenizer.json", MAX_LENGTH)


@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
  lines = (minilm_model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
  return {piece: i for i, piece in enumerate(lines) if piece}


def random_texts(rng: np.random.Generator, count: int) -> list[str]:
  texts = []
  for _ in range(count):
    parts = []
    for _ in range(int(rng.integers(1, 25))):
      pool = (WORDS, UNICODE, PUNCTUATION)[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
      parts.append(str(rng.choice(pool)))
      parts.append(str(rng.choice(SPACES)) if rng.random() < 0.8 else "")  # some words run together
    texts.append("".join(parts))
  return texts


def test_pieces_and_offsets_match_an_independent_bert_tokenizer(tokenizer, vocab):
  seed = int(np.random.SeedSequence().entropy % 2**32)
  print(f"random texts seed: {seed}")
  texts = random_texts(np.random.default_rng(seed), 200)
  for text, got in zip(texts, tokenizer.encode_batch_with_offsets(texts)):
    expected = [(tokenizer.cls_id, (0, 0))] + reference_pieces(text, vocab, tokenizer.unk_id) + [
        (tokenizer.sep_id, (0, 0))]
    assert list(zip(got.ids, got.offsets)) == expected, repr(text)


def test_offsets_point_at_the_original_characters(tokenizer):
  text = "Crème brûlée, 北京! don't"
  [got] = tokenizer.encode_batch_with_offsets([text])
  assert [text[start:end] for start, end in got.offsets] == [
      "", "Cr", "ème", "br", "ûlé", "e", ",", "北", "京", "!", "don", "'", "t", ""]


def test_offsets_follow_truncation(tokenizer):
  text = "antidisestablishmentarianism " * 100
  [got] = tokenizer.encode_batch_with_offsets([text])
  assert got == WordPieces(tokenizer.encode(text), got.offsets)
  assert len(got.ids) == len(got.offsets) == MAX_LENGTH
  assert got.offsets[-1] == (0, 0) and got.offsets[-2][1] <= len(text)


def test_a_file_without_wordpiece_specials_is_named(tmp_path):
  bad = tmp_path / "tokenizer.json"
  bad.write_text('{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}')
  with pytest.raises(CheckpointError, match=r"tokenizer\.json: no \[PAD\], \[CLS\], \[SEP\], \[UNK\] token"):
    WordPieceTokenizer(bad, MAX_LENGTH)
