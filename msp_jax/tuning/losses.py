"""The one negative log-likelihood of target tokens under teacher forcing (prompt tuning, dev loss, perplexity)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def target_nll(logits: jax.Array, targets: jax.Array, targets_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed NLL of each row's real target tokens, and how many there are.

  Args:
    logits: [batch, T, vocab] teacher-forced logits; position t predicts targets[:, t].
    targets: [batch, T] int32 token ids.
    targets_mask: [batch, T] 1 for a real token, 0 for padding (any numeric or bool dtype).

  Returns:
    (nll [batch] float32 in nats, tokens [batch] float32). Log-softmax runs in float32 whatever the logits'
    dtype, so bfloat16 logits do not lose the small probabilities the loss is made of.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)                # [batch, T, vocab]
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]          # [batch, T]
  mask = targets_mask.astype(jnp.float32)
  return jnp.sum(nll * mask, axis=-1), jnp.sum(mask, axis=-1)
