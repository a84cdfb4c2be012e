"""BERT WordPiece tokenizer from a `tokenizer.json` (all-MiniLM-L6-v2's), run by the `tokenizers` package.

The file holds the whole pipeline: BertNormalizer (drops control characters, spaces out CJK characters,
lower-cases and strips accents), BertPreTokenizer (splits at whitespace and at every punctuation character),
greedy longest-match WordPiece (`##` continuations, [UNK] for a word it cannot cover) and the
`[CLS] ... [SEP]` template. It is used as stored except for its fixed 128-token padding and truncation:
texts are cut at `max_length` ids ([CLS] and [SEP] included) and never padded here (batching pads).

`encode_batch_with_offsets` also gives each word piece the characters of the original text it came from,
so per-piece predictions (a BIO tagger over word pieces) map back to character spans.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

from msp_jax.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class WordPieces:
  """One text's word pieces: `ids[i]` came from `text[offsets[i][0]:offsets[i][1]]`.

  Offsets count Python characters (code points) of the original text, before normalisation: a piece of an
  accented, upper-case or otherwise normalised word points at the original characters ("Crème" -> "cr"
  (0, 2), "##eme" (2, 5)). [CLS] and [SEP] come from no character and get the empty span (0, 0).
  """

  ids: list[int]
  offsets: list[tuple[int, int]]


class WordPieceTokenizer:
  """A BERT WordPiece `tokenizer.json`, cut at `max_length` tokens with [CLS]/[SEP].

  Special-token strings written in a text ("[SEP]", "[MASK]", ...) are read as those tokens, as
  sentence-transformers reads them with the same file.
  """

  def __init__(self, tokenizer_json: pathlib.Path, max_length: int):
    from tokenizers import Tokenizer

    try:
      self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as e:  # tokenizers raises plain Exception subclasses for unreadable JSON
      raise CheckpointError(f"{tokenizer_json}: cannot load the tokenizer ({e})") from None
    # The stored file pads every input to 128 and truncates at 128; sentence-transformers calls it with
    # truncation at max_seq_length and pads per batch itself. We pad per bucket, so no padding here.
    self._tokenizer.no_padding()
    self._tokenizer.enable_truncation(max_length=max_length)
    self.max_length = max_length
    self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    special = {name: self._tokenizer.token_to_id(name) for name in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")}
    missing = [name for name, token_id in special.items() if token_id is None]
    if missing:
      raise CheckpointError(f"{tokenizer_json}: no {', '.join(missing)} token (is this a BERT WordPiece "
                            "tokenizer?)")
    self.pad_id, self.cls_id, self.sep_id, self.unk_id = special.values()

  def encode(self, text: str) -> list[int]:
    """[CLS] wordpieces [SEP], at most `max_length` ids."""
    return self._tokenizer.encode(text).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Like `encode` for many texts (the Rust tokenizer parallelises this)."""
    return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

  def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[WordPieces]:
    """The ids of `encode_batch` with each piece's character span in its text (see `WordPieces`)."""
    return [WordPieces(e.ids, list(e.offsets)) for e in self._tokenizer.encode_batch(list(texts))]
