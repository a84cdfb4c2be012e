"""Valid BIO decoding: constrained Viterbi over a tagger's per-piece tag scores.

Taking each piece's best tag on its own can write `I-x` after `O` or after another type, a sequence with no
reading as spans. The decoder instead finds the highest-scoring sequence among the valid ones: the sum of the
pieces' log-probabilities, with the transitions BIO forbids (`O -> I-x`, `B-x/I-x -> I-y` for y != x, and an
`I-x` first) scored -inf. That is exactly a linear-chain CRF's decoding with a fixed 0/-inf transition matrix;
the tagger itself is trained with a per-piece softmax.

  allowed = allowed_transitions(tag_names)              # [tags, tags] bool, [previous, next]
  best = constrained_viterbi(log_probs, lengths, allowed)   # [batch, length] int32, valid up to each length
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from msp_jax.evaluation.spans import tag_type


def allowed_transitions(tag_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(transitions [tags, tags] bool: previous -> next allowed, starts [tags] bool: may open a sequence)."""
  types = [tag_type(tag) for tag in tag_names]
  starts = np.array([prefix != "I" for prefix, _ in types])
  transitions = np.ones((len(types), len(types)), bool)
  for j, (prefix, label) in enumerate(types):
    if prefix == "I":  # I-x only continues B-x or I-x
      transitions[:, j] = [p != "O" and l == label for p, l in types]
  return transitions, starts


def constrained_viterbi(log_probs: np.ndarray, lengths: np.ndarray, allowed: tuple[np.ndarray, np.ndarray]
                        ) -> np.ndarray:
  """The best valid tag sequence of each row.

  Args:
    log_probs: [batch, length, tags] per-piece tag scores (log-probabilities; any finite scores work).
    lengths: [batch] how many leading pieces of each row are real (0 allowed).
    allowed: `allowed_transitions(tag_names)`.

  Returns:
    [batch, length] int32: the argmax over valid sequences of the summed scores for the first `lengths[b]`
    pieces; 0 after them.
  """
  transitions, starts = allowed
  scores = np.asarray(log_probs, np.float64)
  batch, length, tags = scores.shape
  lengths = np.asarray(lengths)
  out = np.zeros((batch, length), np.int32)
  if length == 0 or batch == 0:
    return out
  penalty = np.where(transitions, 0.0, -np.inf)            # [previous, next]
  best = np.where(starts, scores[:, 0], -np.inf)           # [batch, tags]
  backpointers = np.zeros((batch, length, tags), np.int32)
  for t in range(1, length):
    candidates = best[:, :, None] + penalty[None]          # [batch, previous, next]
    previous = candidates.argmax(axis=1)
    stepped = np.take_along_axis(candidates, previous[:, None, :], axis=1)[:, 0] + scores[:, t]
    live = (t < lengths)[:, None]
    best = np.where(live, stepped, best)                    # rows already ended keep their final scores
    backpointers[:, t] = np.where(live, previous, np.arange(tags)[None])
  last = best.argmax(axis=1)
  for t in range(length - 1, -1, -1):
    out[:, t] = np.where(t < lengths, last, 0)
    last = backpointers[np.arange(batch), t, last]
  return out
