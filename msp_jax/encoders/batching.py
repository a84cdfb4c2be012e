"""Host-side batching of tokenised texts for a sentence encoder: the two layouts `SentenceEncoder` runs.

* **padded** (`padded_batches`): texts sorted longest first, cut into batches of at most `batch_size` rows
  and `max_batch_tokens` padded tokens, each right-padded to the smallest bucket length that holds its longest
  text: `token_ids [rows, length]`, `mask [rows, length]`. Any backend.
* **packed** (`packed_batches`): texts laid end to end in one token axis of `batch_tokens` tokens, with
  `starts [max_texts + 1]` marking where each begins: no padding between texts, and every batch but the last
  has the same shapes, so one compilation serves a whole corpus (and the last batch takes one of 8 sizes).
  Needs an attention that reads `starts` (the CPU kernel `kernels.segment_attention`).

Both return batches whose `texts` field holds the indices (into the input list) of the texts they carry, in
the order of their rows / segments; the rest of each batch is padding.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from msp_jax.errors import ConfigError
from msp_jax.padding import pad_rows


@dataclasses.dataclass(frozen=True)
class PaddedBatch:
  texts: np.ndarray      # [k] int, input indices of rows 0 .. k-1
  token_ids: np.ndarray  # [rows, length] int32, right padding with the pad id
  mask: np.ndarray       # [rows, length] int32, 1 = real token


@dataclasses.dataclass(frozen=True)
class PackedBatch:
  texts: np.ndarray        # [k] int, input indices of segments 0 .. k-1
  token_ids: np.ndarray    # [tokens] int32
  positions: np.ndarray    # [tokens] int32, place of each token in its text
  segment_ids: np.ndarray  # [tokens] int32, segment of each token; max_texts for padding
  starts: np.ndarray       # [max_texts + 1] int32, segment s = tokens starts[s] .. starts[s + 1] - 1


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length (the largest bucket if none is)."""
  for bucket in buckets:
    if length <= bucket:
      return bucket
  return buckets[-1]


def _power_of_two_at_least(count: int) -> int:
  size = 1
  while size < count:
    size *= 2
  return size


def padded_batches(ids: Sequence[Sequence[int]], *, batch_size: int, max_batch_tokens: int,
                   buckets: Sequence[int], pad_id: int) -> list[PaddedBatch]:
  """Length-bucketed padded batches (see the module docstring).

  Longest first: each batch's first text is its longest, and the final, partial batch holds the shortest
  texts. A final batch of k < batch_size texts gets the next power of two >= k rows (few shapes).
  """
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size}, expected >= 1")
  order = np.argsort([-len(x) for x in ids], kind="stable")
  batches, start = [], 0
  while start < len(order):
    length = bucket_length(len(ids[order[start]]), buckets)
    rows_cap = min(batch_size, max(1, max_batch_tokens // length))  # Fewer rows for long texts.
    chunk = order[start:start + rows_cap]
    start += len(chunk)
    rows = min(_power_of_two_at_least(len(chunk)), rows_cap)
    token_ids, mask = pad_rows([ids[i] for i in chunk] + [[] for _ in range(rows - len(chunk))], length, pad_id)
    batches.append(PaddedBatch(chunk, token_ids, mask))
  return batches


def _first_fit_decreasing(lengths: Sequence[int], capacity: int, max_items: int) -> list[list[int]]:
  """Indices of `lengths` in bins of total <= capacity and <= max_items each: every bin takes the longest
  remaining item that still fits (of equal lengths, the earliest index) until none does."""
  by_length: dict[int, list[int]] = {}
  for i, length in enumerate(lengths):
    by_length.setdefault(length, []).append(i)
  for stack in by_length.values():
    stack.reverse()  # pop() then takes the earliest index of each length first
  sizes = sorted(by_length, reverse=True)
  remaining = len(lengths)
  bins = []
  while remaining:
    chosen, room = [], capacity
    while len(chosen) < max_items and remaining:
      length = next((n for n in sizes if n <= room and by_length[n]), None)
      if length is None:
        break
      chosen.append(by_length[length].pop())
      room -= length
      remaining -= 1
    bins.append(chosen)
  return bins


def packed_batches(ids: Sequence[Sequence[int]], *, batch_tokens: int, max_texts: int, pad_id: int
                   ) -> list[PackedBatch]:
  """Packed batches of `batch_tokens` tokens and at most `max_texts` texts (see the module docstring).

  Each batch is filled first-fit-decreasing: the longest remaining text that still fits, until none does or
  `max_texts` are in. The last batch is cut to the next multiple of an eighth of `batch_tokens` (at least 64
  tokens) that holds it: at most 8 shapes ever compile, and the last batch wastes less than an eighth. Texts
  must be at most `batch_tokens` long.
  """
  if batch_tokens < 1 or max_texts < 1:
    raise ConfigError(f"batch_tokens={batch_tokens}, max_texts={max_texts}: expected both >= 1")
  too_long = [i for i, x in enumerate(ids) if len(x) > batch_tokens]
  if too_long:
    raise ConfigError(f"text {too_long[0]} has {len(ids[too_long[0]])} tokens, more than batch_tokens="
                      f"{batch_tokens}; raise batch_tokens to at least the longest text")
  chosen_batches = _first_fit_decreasing([len(x) for x in ids], batch_tokens, max_texts)
  granule = max(64, batch_tokens // 8)
  batches = []
  for number, chosen in enumerate(chosen_batches):
    used = sum(len(ids[i]) for i in chosen)
    last = number == len(chosen_batches) - 1
    tokens = min(batch_tokens, -(-used // granule) * granule) if last else batch_tokens
    token_ids = np.full(tokens, pad_id, np.int32)
    positions = np.zeros(tokens, np.int32)
    segment_ids = np.full(tokens, max_texts, np.int32)
    starts = np.full(max_texts + 1, used, np.int32)
    offset = 0
    for segment, i in enumerate(chosen):
      n = len(ids[i])
      starts[segment] = offset
      token_ids[offset:offset + n] = ids[i]
      positions[offset:offset + n] = np.arange(n)
      segment_ids[offset:offset + n] = segment
      offset += n
    batches.append(PackedBatch(np.asarray(chosen, np.int64), token_ids, positions, segment_ids, starts))
  return batches
