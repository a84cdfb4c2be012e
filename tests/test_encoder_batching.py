"""`msp_jax.encoders.batching`: the padded and packed batch layouts of the sentence encoder."""

from __future__ import annotations

import numpy as np
import pytest

from msp_jax.encoders import batching
from msp_jax.errors import ConfigError

PAD = 0


def random_ids(rng: np.random.Generator, count: int, longest: int = 60) -> list[list[int]]:
  return [rng.integers(1, 1000, int(n)).tolist() for n in rng.integers(1, longest + 1, count)]


@pytest.mark.parametrize("count", [1, 7, 300])
def test_packed_batches_hold_every_text_once_within_their_limits(count):
  seed = int(np.random.SeedSequence().entropy % 2**32)
  ids = random_ids(np.random.default_rng(seed), count)
  batches = batching.packed_batches(ids, batch_tokens=256, max_texts=16, pad_id=PAD)
  seen = np.concatenate([b.texts for b in batches])
  assert sorted(seen.tolist()) == list(range(count)), seed
  for number, batch in enumerate(batches):
    k = len(batch.texts)
    assert 1 <= k <= 16 and batch.starts.shape == (17,)
    tokens = batch.token_ids.shape[0]
    if number < len(batches) - 1:
      assert tokens == 256
    else:
      assert tokens in (64, 128, 192, 256) and tokens - 64 < batch.starts[-1] <= tokens
    for segment, text in enumerate(batch.texts):
      begin, end = batch.starts[segment], batch.starts[segment + 1]
      assert batch.token_ids[begin:end].tolist() == ids[text]
      assert batch.positions[begin:end].tolist() == list(range(len(ids[text])))
      assert (batch.segment_ids[begin:end] == segment).all()
    assert (batch.starts[k:] == batch.starts[-1]).all()  # unused segments are empty
    assert (batch.segment_ids[batch.starts[-1]:] == 16).all() and (batch.token_ids[batch.starts[-1]:] == PAD).all()


def test_packed_batches_fill_gaps_with_shorter_texts():
  # After 200 tokens the 100-token text does not fit; first-fit-decreasing puts the 40- and 10-token texts in
  # the 56 left, and the 100-token text opens the second batch.
  ids = [[1] * 200, [2] * 40, [3] * 100, [4] * 10]
  batches = batching.packed_batches(ids, batch_tokens=256, max_texts=8, pad_id=PAD)
  assert [b.texts.tolist() for b in batches] == [[0, 1, 3], [2]]


def test_packed_batches_reject_a_text_longer_than_a_batch():
  with pytest.raises(ConfigError, match=r"text 1 has 300 tokens, more than batch_tokens=256"):
    batching.packed_batches([[1] * 3, [1] * 300], batch_tokens=256, max_texts=4, pad_id=PAD)


def test_padded_batches_are_longest_first_and_bucketed():
  rng = np.random.default_rng(3)
  ids = random_ids(rng, 70)
  batches = batching.padded_batches(ids, batch_size=16, max_batch_tokens=4096, buckets=(8, 16, 32, 64),
                                            pad_id=PAD)
  assert sorted(np.concatenate([b.texts for b in batches]).tolist()) == list(range(70))
  lengths = [len(ids[i]) for b in batches for i in b.texts]
  assert lengths == sorted(lengths, reverse=True)
  for batch in batches:
    longest = max(len(ids[i]) for i in batch.texts)
    assert batch.token_ids.shape[1] == batching.bucket_length(longest, (8, 16, 32, 64))
    assert batch.token_ids.shape[0] in (1, 2, 4, 8, 16) and batch.token_ids.shape[0] >= len(batch.texts)
    for row, text in enumerate(batch.texts):
      assert batch.mask[row].sum() == len(ids[text]) and batch.token_ids[row, :len(ids[text])].tolist() == ids[text]
    assert not batch.mask[len(batch.texts):].any()
