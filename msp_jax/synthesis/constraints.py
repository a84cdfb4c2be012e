"""Constrained generation: every sample is well-formed and carries exactly the attributes it was asked for.

The request grammars (`grammars.request_grammar`: the serialisation format with exactly the request's labels)
are compiled against the backbone's BPE vocabulary by llguidance
(`LLMatcher`), which computes the set of allowed *tokens* at every step (a token may span several characters
and brackets; the constraint is on tokens, not characters). `GrammarConstraint` is the host side of
`decoding.sample(constraint=...)`: once per decode step, for the whole batch, it advances each row's matcher by
the token just sampled and returns the next allowed-token bitmask (`[batch, ceil(vocab / 32)]` int32).

The token budget: a grammar alone cannot see `max_new_tokens`, and a sample cut off by it does not parse. Each
row therefore tracks a short way to finish from where it is (`closing_text`: close the open span or bracket,
add the missing labels with a one-word filler, the intents section, EOS). Near the end of the budget a token is
allowed only if that closing still fits after it, and when the closing exactly fills what is left it is forced
(`GrammarConstraint`). A trained model mostly ends on its own before; a random one always ends this way.

Engine choice, measured on the 2-core CPU the benchmarks run on: SmolLM2's 49,152-token vocabulary, the grammars
of 32 front_desk and of 32 crossner_music seeds (up to 5 labels each), one row per seed, each row fed its seed's
own serialisation token by token (the same grammars as Lark for llguidance, EBNF for xgrammar, a regular
expression for outlines-core):

  engine          compile per request   step (consume + mask, 32 rows)   runtime dependencies
  llguidance      2.2-3.8 ms            4.0-4.9 ms median                none
  xgrammar        3.7-8.0 ms            0.4-0.5 ms median                torch, triton, transformers at import
  outlines-core   4.9 s (3,308 states)  (token DFA index, a table)       none

outlines-core builds the precomputed token-transition table this module would otherwise gather inside the
jitted loop; at seconds per request (the "each requested label at least once" condition multiplies the DFA's
states by 2^labels) it is slower than the whole generate stage. xgrammar's masks are faster, but it would make
PyTorch a runtime dependency of a JAX package; llguidance's 4-5 ms per step is a few percent of a SmolLM2 decode
step at batch 32 (see `benchmarks/decode.py`, row `constrained`).
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from msp_jax.errors import ConfigError
from msp_jax.synthesis.grammars import FILLER, RequestGrammar

SPAN_ROOM = 4  # tokens per missing span label left to the model for the span's own text (see `masks`)


# ------------------------------------------------------------------------------------------ token vocabulary
class TokenVocabulary:
  """A tokenizer as llguidance sees it (built once per tokenizer: about 1 s for SmolLM2's vocabulary).

  Supports byte-level BPE (`BpeTokenizer`) and the byte tokenizer of the random test backbones.
  """

  def __init__(self, tokenizer: Any, vocab_size: int):
    import llguidance

    from msp_jax.backbones.bpe_tokenizer import BpeTokenizer
    from msp_jax.backbones.byte_tokenizer import BYTE_OFFSET, ByteTokenizer

    self.vocab_size = int(vocab_size)
    self.eos_id = int(tokenizer.eos_id)
    self.byte_ids: dict[int, int] = {}  # byte -> the token of that one byte
    if isinstance(tokenizer, BpeTokenizer):
      self.ll = llguidance.LLTokenizer(tokenizer.to_json(), n_vocab=self.vocab_size, eos_token=self.eos_id)
      from msp_jax.backbones.bpe_tokenizer import byte_level_alphabet

      for byte, char in enumerate(byte_level_alphabet()):
        self.byte_ids[byte] = tokenizer._tokenizer.token_to_id(char)  # pylint: disable=protected-access
    elif isinstance(tokenizer, ByteTokenizer):
      specials = list(range(BYTE_OFFSET))
      tokens = [b"<special_%d>" % i for i in specials] + [bytes([b]) for b in range(256)]
      tokens += [b"<unused_%d>" % i for i in range(len(tokens), self.vocab_size)]
      self.byte_ids = {b: b + BYTE_OFFSET for b in range(256)}
      wrapper = _WrappedTokens(tokens, self.eos_id, specials + list(range(256 + BYTE_OFFSET, self.vocab_size)),
                               lambda text: [b + BYTE_OFFSET for b in text.encode("utf-8")])
      self.ll = llguidance.LLTokenizer(llguidance.TokenizerWrapper(wrapper), n_vocab=self.vocab_size)
    else:
      raise ConfigError(f"constrained generation supports byte-level BPE and byte tokenizers, not "
                        f"{type(tokenizer).__name__}; set SamplingConfig.constrained = False for this backbone")
    self.executor = llguidance.LLExecutor()
    self.token_bytes = [self.ll.decode_bytes([i]) if i != self.eos_id else b"" for i in range(self.vocab_size)]
    # Token classes for the last steps before the budget runs out (`GrammarConstraint.masks`).
    specials = np.array([sum(b.count(c) for c in b"[]|") for b in self.token_bytes])
    self.structural = specials > 0
    # Tokens whose only reserved character is one `[`, at their end or with text after it: in a bracket
    # format's text they all open a span the same way, so one check stands for all of them.
    opens = np.array([b"[" in b for b in self.token_bytes]) & (specials == 1)
    self.opens_empty_span = opens & np.array([b.endswith(b"[") for b in self.token_bytes])
    self.opens_span_with_text = opens & ~self.opens_empty_span
    self.opens_span_bits = np.packbits(np.concatenate([opens, np.zeros(self.mask_words * 32 - self.vocab_size, bool)]),
                                       bitorder="little").view(np.int32)
    self.incomplete_end = np.array([ends_incomplete(b) for b in self.token_bytes])
    self.starts_space = np.array([b[:1].isspace() for b in self.token_bytes])

  @property
  def mask_words(self) -> int:
    return (self.vocab_size + 31) // 32

  def tokenize_bytes(self, data: bytes) -> list[int]:
    """Tokens whose bytes are exactly `data` (text through the tokenizer; a leading broken character bytewise)."""
    head = 0
    while head < len(data) and 0x80 <= data[head] < 0xC0:  # continuation bytes of a character begun earlier
      head += 1
    return [self.byte_ids[b] for b in data[:head]] + (self.ll.tokenize_bytes(data[head:]) if head < len(data) else [])


class _WrappedTokens:
  """What `llguidance.TokenizerWrapper` reads from a tokenizer without a `tokenizer.json`."""

  def __init__(self, tokens: list[bytes], eos_id: int, special_ids: list[int], encode):
    self.tokens = tokens
    self.eos_token_id = eos_id
    self.bos_token_id = None
    self.special_token_ids = special_ids
    self._encode = encode

  def __call__(self, text: str | bytes) -> list[int]:
    return self._encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_vocabulary(tokenizer: Any, vocab_size: int) -> TokenVocabulary:
  """The (cached) `TokenVocabulary` of `tokenizer` with `vocab_size` logits."""
  cached = _VOCABULARIES.get(tokenizer)
  if cached is None or cached.vocab_size != vocab_size:
    cached = _VOCABULARIES[tokenizer] = TokenVocabulary(tokenizer, vocab_size)
  return cached


def _character_length(lead: int) -> int:
  return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def complete_character(tail: bytes) -> bytes:
  """Continuation bytes that finish the UTF-8 character `tail` begins into one every grammar allows as text
  (printable, not a space, not a reserved bracket character)."""

  def search(prefix: bytes, left: int) -> bytes | None:
    if left == 0:
      try:
        char = prefix.decode("utf-8")
      except UnicodeDecodeError:
        return None
      return prefix if ord(char) >= 0x20 and char != "\x7f" and not char.isspace() else None
    for byte in range(0x80, 0xC0):
      found = search(prefix + bytes([byte]), left - 1)
      if found is not None:
        return found
    return None

  found = search(tail, _character_length(tail[0]) - len(tail))
  if found is None:
    raise ValueError(f"no UTF-8 character starts with {tail!r}")
  return found[len(tail):]


def split_incomplete(data: bytes) -> tuple[str, bytes]:
  """(the text of `data`'s complete characters, the bytes of a character still incomplete at its end)."""
  try:
    return data.decode("utf-8"), b""
  except UnicodeDecodeError as e:
    if e.reason != "unexpected end of data":
      raise
    return data[:e.start].decode("utf-8"), data[e.start:]


def ends_incomplete(data: bytes) -> bool:
  """Whether `data` ends inside a UTF-8 character (its last lead byte needs more bytes than follow it)."""
  for back in range(1, min(4, len(data)) + 1):
    byte = data[-back]
    if byte >= 0xC0:
      return _character_length(byte) > back
    if byte < 0x80:
      return False
  return False


# --------------------------------------------------------------------------------- the host side of sampling
class GrammarConstraint:
  """Per-row grammar matchers for one `decoding.sample` call (see the module docstring).

  `masks(step, previous, done)` is called once per decode step, before the token of `step` is drawn:
  `previous` [batch] is the token drawn at `step - 1` (ignored at step 0), `done` [batch] the rows already
  finished. Returns the allowed tokens as a bitmask [batch, mask_words] int32 (bit t % 32 of word t // 32).

  The budget: `r` tokens remain (this one included) and `closing` tokens finish the row from here. While
  closing + margin < r the grammar's mask is used as is (no token adds more than `margin` to the closing).
  Closer to the end each allowed token must leave a closing that still fits in r - 1: plain text does not
  change the closing; a token with a bracket or bar, or any token inside a label, is checked exactly; one that
  leaves a character half-written adds at most 3 bytes. When closing = r the closing tokens are forced.
  """

  def __init__(self, vocabulary: TokenVocabulary, grammars: Sequence[RequestGrammar], max_new_tokens: int):
    import llguidance

    self.vocabulary = vocabulary
    self.grammars = list(grammars)
    self.max_new_tokens = int(max_new_tokens)
    self.matchers = []
    for grammar in self.grammars:
      matcher = llguidance.LLMatcher(vocabulary.ll, llguidance.LLMatcher.grammar_from_lark(grammar.lark),
                                     log_level=0)
      if matcher.is_error():
        raise ValueError(f"grammar does not compile: {matcher.get_error()}\n{grammar.lark}")
      self.matchers.append(matcher)
    self.margins = [closing_margin(vocabulary, g) for g in self.grammars]
    self.written = [b""] * len(self.grammars)
    self.forced: list[list[int]] = [[] for _ in self.grammars]
    self.closed_by_budget = [False] * len(self.grammars)  # rows whose end max_new_tokens forced
    self.ended = [False] * len(self.grammars)  # rows that drew EOS (a sampler without eos_id runs on)
    self.problems: list[str] = []  # anything here is a bug: the sampled text may not parse
    self._bitmask = np.zeros((len(self.grammars), vocabulary.mask_words), np.int32)

  def closing_tokens(self, row: int, data: bytes | None = None) -> list[int]:
    """The tokens (EOS included) that finish row `row` after it has written `data` (default: what it has)."""
    text, broken = split_incomplete(self.written[row] if data is None else data)
    out = b""
    if broken:
      out = complete_character(broken)
      text += (broken + out).decode("utf-8")
    out += self.grammars[row].closing_text(text).encode("utf-8")
    return self.vocabulary.tokenize_bytes(out) + [self.vocabulary.eos_id]

  def masks(self, step: int, previous: np.ndarray, done: np.ndarray) -> np.ndarray:
    import llguidance.numpy as llg_numpy

    bitmask = self._bitmask
    bitmask.fill(-1)  # finished rows: anything (the sampler writes pad there)
    remaining = self.max_new_tokens - step
    free, near_end = [], []
    for row, matcher in enumerate(self.matchers):
      if done[row] or self.ended[row]:
        continue
      if step > 0:
        self._consume(row, int(previous[row]))
        if self.ended[row]:
          continue
      if not self.forced[row]:
        text = split_incomplete(self.written[row])[0]
        closing_bytes = len(self.grammars[row].closing_text(text).encode("utf-8")) + 3
        if closing_bytes + 1 + self.margins[row] >= remaining:  # tokens <= bytes: only now count tokens
          closing = self.closing_tokens(row)
          if len(closing) > remaining:
            self.problems.append(f"row {row}: {len(closing)} closing tokens but {remaining} steps left")
          if len(closing) >= remaining:
            self.forced[row] = closing
            self.closed_by_budget[row] = True
          elif len(closing) + self.margins[row] >= remaining:
            near_end.append((row, len(closing)))
      if self.forced[row]:
        bitmask[row] = 0
        token = self.forced[row][0]
        bitmask[row, token // 32] = np.uint32(1 << (token % 32)).view(np.int32)
      else:
        free.append((matcher, row))
    if free:
      llg_numpy.fill_next_token_bitmask_par(self.vocabulary.executor, free, bitmask)
    for row, closing in near_end:
      self._keep_closable(row, closing, remaining)
      self._open_missing_span(row, closing, remaining)
    return bitmask.copy()

  def _open_missing_span(self, row: int, closing: int, remaining: int) -> None:
    """Bracket formats: once only the closing and SPAN_ROOM tokens per missing label are left, the next token
    must open a span, so the model writes the span's text itself rather than the closing's filler."""
    missing = self.grammars[row].spans_to_open(split_incomplete(self.written[row])[0])
    if not missing or remaining > closing + SPAN_ROOM * missing:
      return
    nudged = self._bitmask[row] & self.vocabulary.opens_span_bits
    if nudged.any():  # (the closing-fit check above already cleared openers that would not fit)
      self._bitmask[row] = nudged

  def _consume(self, row: int, token: int) -> None:
    if token == self.vocabulary.eos_id:
      self.ended[row] = True
    if self.forced[row]:
      expected = self.forced[row].pop(0)
      if token != expected:
        self.problems.append(f"row {row}: drew token {token} where the closing forced {expected}")
    if not self.matchers[row].consume_token(token):
      self.problems.append(f"row {row}: token {token} rejected after {self.written[row][-40:]!r}: "
                           f"{self.matchers[row].get_error()[:200]}")
    self.written[row] += self.vocabulary.token_bytes[token]

  def _keep_closable(self, row: int, closing: int, remaining: int) -> None:
    """Clears the bits of tokens after which the row could no longer close within `remaining - 1` tokens."""
    vocab = self.vocabulary
    bits = np.unpackbits(self._bitmask[row].view(np.uint8), bitorder="little")[:vocab.vocab_size].astype(bool)
    allowed = np.flatnonzero(bits)
    prefix = self.written[row]
    fits = lambda data: len(self.closing_tokens(row, data)) <= remaining - 1  # noqa: E731
    grammar = self.grammars[row]
    if grammar.in_label(split_incomplete(prefix)[0]):
      exact = allowed
      if grammar.task == "semantic_parse":
        # A complete TOP label may still grow ("[IN:GET_WEATHER" + "_ALERT"); a space then a word ends it, and
        # every such word leaves the same closing as the filler does.
        words = vocab.starts_space[allowed] & ~vocab.structural[allowed] & ~vocab.incomplete_end[allowed]
        exact = allowed[~words]
        if words.any() and not fits(prefix + b" " + FILLER.encode()):
          bits[allowed[words]] = False
    else:
      exact = allowed[vocab.structural[allowed]]
      if closing + 3 > remaining - 1:
        bits[allowed[vocab.incomplete_end[allowed] & ~vocab.structural[allowed]]] = False
      if grammar.task != "semantic_parse":
        for group, written in ((vocab.opens_empty_span, b"["), (vocab.opens_span_with_text, b"[" + FILLER.encode())):
          members = exact[group[exact]]
          if len(members) and not fits(prefix + written):
            bits[members] = False
        exact = exact[~(vocab.opens_empty_span[exact] | vocab.opens_span_with_text[exact])]
    for token in exact:
      if token == vocab.eos_id:
        continue
      if not fits(prefix + vocab.token_bytes[token]):
        bits[token] = False
    if not bits.any():  # nothing the model may choose still fits: finish now (the closing itself fits)
      self.forced[row] = self.closing_tokens(row)
      self.closed_by_budget[row] = True
      bits[self.forced[row][0]] = True
    packed = np.packbits(np.concatenate([bits, np.zeros(vocab.mask_words * 32 - len(bits), bool)]),
                         bitorder="little")
    self._bitmask[row] = packed.view(np.int32)


def closing_margin(vocabulary: TokenVocabulary, grammar: RequestGrammar) -> int:
  """An upper bound on how much one token can lengthen a row's closing: it can open a span or bracket
  (a filler, the longest label and its brackets), leave a character half-written (3 bytes), and BPE may
  split the new closing differently (a few tokens)."""
  longest = max((len(vocabulary.tokenize_bytes(f" | {label}] [".encode())) for label in
                 grammar.span_labels + grammar.intents), default=0)
  return longest + len(vocabulary.tokenize_bytes(f" {FILLER} ]".encode())) + 3 + 3
