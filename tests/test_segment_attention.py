"""`msp_jax.kernels.segment_attention`: attention over packed sequences against float64 NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.kernels import segment_attention


def reference(qkv: np.ndarray, starts: np.ndarray, num_heads: int) -> np.ndarray:
  """float64 softmax(q k^T / sqrt(D)) v per sequence and head; zeros for the padding after starts[-1]."""
  qkv = qkv.astype(np.float64)
  tokens, width = qkv.shape
  head_dim = width // (3 * num_heads)
  q, k, v = qkv.reshape(tokens, 3, num_heads, head_dim).transpose(1, 2, 0, 3)  # [heads, tokens, D] each
  out = np.zeros((num_heads, tokens, head_dim))
  for begin, end in zip(starts[:-1], starts[1:]):
    if end > begin:
      logits = q[:, begin:end] @ k[:, begin:end].transpose(0, 2, 1) / np.sqrt(head_dim)
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      out[:, begin:end] = (weights / weights.sum(-1, keepdims=True)) @ v[:, begin:end]
  return out.transpose(1, 0, 2).reshape(tokens, num_heads * head_dim)


def attend(qkv, starts, num_heads):
  return np.asarray(jax.jit(segment_attention.attention, static_argnums=2)(qkv, starts, num_heads))


def test_the_kernel_is_built_here():
  assert segment_attention.available(), segment_attention.unavailable_reason()


@pytest.mark.parametrize("head_dim", segment_attention.HEAD_DIMS)
@pytest.mark.parametrize("num_heads", [1, 3])
def test_matches_float64_numpy_on_random_sequences(head_dim, num_heads):
  seed = int(np.random.SeedSequence().entropy % 2**32)
  rng = np.random.default_rng(seed)
  # Lengths around the kernel's 4-query and 16/32-key blocks, an empty sequence, one long one, then padding.
  lengths = [1, 0, 3, 4, 5, 15, 16, 17, 31, 32, 33, 47, 64, 70, 130] + rng.integers(1, 60, 6).tolist()
  rng.shuffle(lengths)
  starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
  tokens = int(starts[-1]) + 11
  qkv = (rng.standard_normal((tokens, 3 * num_heads * head_dim)) * 3).astype(np.float32)
  got, want = attend(qkv, starts, num_heads), reference(qkv, starts, num_heads)
  # float32 round-off: sharp softmaxes (logits of tens) and sums over up to 130 values, relative to the
  # outputs' scale (about 10 here); a token mixed with the wrong sequence or head is off by O(1).
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=f"random seed {seed}")
  assert not got[starts[-1]:].any()


def test_large_logits_keep_the_softmax_finite_and_exact():
  rng = np.random.default_rng(7)
  starts = np.asarray([0, 9, 29], np.int32)
  qkv = (rng.standard_normal((29, 3 * 2 * 32)) * 40).astype(np.float32)  # logits in the thousands
  got = attend(qkv, starts, 2)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, reference(qkv, starts, 2), rtol=1e-4, atol=1e-3)


def test_a_token_attends_only_within_its_own_sequence():
  rng = np.random.default_rng(1)
  starts = np.asarray([0, 5, 12], np.int32)
  qkv = rng.standard_normal((12, 3 * 32)).astype(np.float32)
  changed = qkv.copy()
  changed[5:] = rng.standard_normal((7, 3 * 32))  # a different second sequence
  np.testing.assert_array_equal(attend(qkv, starts, 1)[:5], attend(changed, starts, 1)[:5])


def test_runs_inside_a_loop_with_traced_starts():
  rng = np.random.default_rng(2)
  qkv = rng.standard_normal((20, 3 * 4 * 16)).astype(np.float32)
  starts = jnp.asarray([0, 7, 20], jnp.int32)
  loop = jax.jit(lambda x: jax.lax.fori_loop(
      0, 3, lambda _, y: jnp.tile(segment_attention.attention(y, starts, 4), (1, 3)) / 2, x))
  want = qkv
  for _ in range(3):
    want = np.tile(reference(want, np.asarray(starts), 4), (1, 3)) / 2
  np.testing.assert_allclose(np.asarray(loop(qkv)), want, rtol=1e-5, atol=1e-5)


def test_bad_shapes_and_starts_are_rejected():
  with pytest.raises(ValueError, match=r"head_dim|D in"):
    segment_attention.attention(jnp.zeros((4, 3 * 2 * 24)), jnp.asarray([0, 4], jnp.int32), 2)
  with pytest.raises(ValueError, match=r"do not fit"):
    segment_attention.attention(jnp.zeros((4, 100)), jnp.asarray([0, 4], jnp.int32), 2)
  with pytest.raises(Exception, match=r"starts must ascend"):
    attend(np.zeros((4, 96), np.float32), np.asarray([0, 3, 2], np.int32), 1)
  with pytest.raises(Exception, match=r"starts must ascend"):
    attend(np.zeros((4, 96), np.float32), np.asarray([0, 5], np.int32), 1)  # past the last token
