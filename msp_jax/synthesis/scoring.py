"""Token log-likelihoods of texts under a backbone (perplexity of data, real or generated).

Decoder-only: a text is scored token by token given everything before it; the first token is conditioned
on BOS when the tokenizer has one, else it is the context and not scored. Encoder-decoder: the input is
encoded (with EOS, as T5 was trained) and the target is scored, EOS included.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import numpy as np

from msp_jax.backbones.base import Backbone
from msp_jax.errors import MspError
from msp_jax.padding import pad_rows
from msp_jax.tuning.losses import target_nll

LENGTH_BUCKET = 32  # Pad lengths up to a multiple of this: few compilations, little waste.


@dataclasses.dataclass(frozen=True)
class TextScore:
  nll: float      # summed negative log-likelihood (nats)
  tokens: int     # scored tokens

  @property
  def mean_nll(self) -> float:
    return self.nll / self.tokens if self.tokens else math.nan


def _bucket(length: int) -> int:
  return max(LENGTH_BUCKET, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)


@functools.partial(jax.jit, static_argnums=0)
def _summed_nll(backbone: Backbone, params, input_ids, input_mask, targets, targets_mask):
  """[batch] summed NLL of `targets` given the embedded `input_ids`."""
  logits = backbone.target_logits(params, backbone.embed(params, input_ids), input_mask, targets, targets_mask)
  return target_nll(logits, targets, targets_mask)[0]


def split_for_scoring(backbone: Backbone, text: str, source: str | None = None,
                      max_tokens: int = 512) -> tuple[list[int], list[int]]:
  """(context ids, scored ids) of one example, following the module docstring's convention."""
  tok = backbone.tokenizer
  if backbone.is_encoder_decoder:
    context = tok.encode(source or "")[:max_tokens - 1] + [tok.eos_id]
    return context, tok.encode(text)[:max_tokens - 1] + [tok.eos_id]
  ids = tok.encode(text)[:max_tokens]
  if tok.bos_id is not None:
    return [tok.bos_id], ids
  return ids[:1], ids[1:]


def score_texts(backbone: Backbone, params, texts: Sequence[str], sources: Sequence[str] | None = None, *,
                batch_size: int = 8, max_tokens: int = 512) -> list[TextScore]:
  """Summed NLL and token count of each text (and, for encoder-decoders, its source)."""
  if backbone.is_encoder_decoder and sources is None:
    raise MspError("an encoder-decoder backbone scores `input<TAB>target` pairs: no inputs were given")
  pairs = [split_for_scoring(backbone, t, None if sources is None else sources[i], max_tokens)
           for i, t in enumerate(texts)]
  # Sort by length so each batch pads little; scores go back in input order.
  order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
  scores: list[TextScore | None] = [None] * len(pairs)
  pad = backbone.tokenizer.pad_id
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    rows = [pairs[i] for i in chunk] + [pairs[chunk[0]]] * (batch_size - len(chunk))
    input_ids, input_mask = pad_rows([r[0] for r in rows], _bucket(max(len(r[0]) for r in rows)), pad)
    targets, targets_mask = pad_rows([r[1] for r in rows], _bucket(max(len(r[1]) for r in rows)), pad)
    nll = np.asarray(_summed_nll(backbone, params, input_ids, input_mask, targets, targets_mask))
    for row, i in enumerate(chunk):
      scores[i] = TextScore(float(nll[row]), int(targets_mask[row].sum()))
  return scores  # type: ignore[return-value]


def corpus_perplexity(scores: Sequence[TextScore]) -> tuple[float, float]:
  """(mean NLL per token over all tokens, its perplexity)."""
  tokens = sum(s.tokens for s in scores)
  if tokens == 0:
    raise MspError("nothing to score: every text is empty after tokenisation")
  mean = sum(s.nll for s in scores) / tokens
  return mean, math.exp(mean)
