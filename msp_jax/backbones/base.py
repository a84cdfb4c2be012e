"""The one small interface every frozen backbone LM implements.

msp-jax only ever does four things with a backbone: embed tokens (to initialise soft prompts and to build
model inputs), score a target given a prefix of input *embeddings* (prompt training, perplexity), and decode
incrementally from such a prefix with a KV cache (generation). Both families -- T5 v1.1 encoder-decoder and
the Llama decoder-only family -- implement exactly this, so everything above `backbones/` is family-agnostic.

Conventions (shared by all implementations):
  * `inputs_embeds [batch, in_len, embed]` with `inputs_mask [batch, in_len]` (bool/int, 1 = real). Padding may
    sit anywhere (left, right, or in the middle between a soft prompt and text): positions are
    `cumsum(mask) - 1`, and padded keys are never attended to.
  * `targets [batch, tgt_len]` int32 with `targets_mask [batch, tgt_len]`: the text the model must produce.
    Decoder-only models read `[inputs; targets]`; encoder-decoders encode the inputs and decode the targets
    shifted right (BOS = pad = 0 for T5).
  * Logits are float32 `[..., vocab]`.
  * Params are passed explicitly (pure functions, jit-friendly); the `Backbone` object only holds static
    structure (config, tokenizer) plus the loaded frozen `params` for convenience.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import jax

Params = Any  # A (frozen) nested dict of arrays, exactly as the checkpoint stores it.
Cache = Any   # A pytree of arrays with static shapes: a valid `lax.while_loop` carry.
WEIGHT_DTYPES = ("float32", "bfloat16")  # What `Backbone.inference_params` may store the matmul weights as.


class Tokenizer(Protocol):
  """Text <-> token ids. `eos_id` ends generation; `pad_id` fills batches."""

  vocab_size: int
  eos_id: int
  pad_id: int
  bos_id: int | None

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class Backbone(Protocol):
  """A frozen language model. See the module docstring for the shape conventions."""

  name: str
  is_encoder_decoder: bool
  embed_dim: int
  vocab_size: int
  tokenizer: Tokenizer
  params: Params

  def param_axes(self) -> Any:
    """A tree matching `params` whose leaves are tuples of logical axis names (e.g. ('vocab', 'embed'))."""

  def embed(self, params: Params, tokens: jax.Array) -> jax.Array:
    """tokens [batch, length] int32 -> embeddings [batch, length, embed] (the model's own input scaling)."""

  def target_logits(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                    targets: jax.Array, targets_mask: jax.Array) -> jax.Array:
    """Teacher-forced logits [batch, tgt_len, vocab]: position t predicts targets[:, t]."""

  def init_decode(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                  max_new_tokens: int) -> tuple[jax.Array, Cache]:
    """Runs the prefix once; returns logits [batch, vocab] for the first new token and the cache."""

  def decode_step(self, params: Params, cache: Cache, tokens: jax.Array) -> tuple[jax.Array, Cache]:
    """Feeds tokens [batch] (the last sampled ones); returns logits [batch, vocab] for the next token."""

  def inference_params(self, params: Params, weights_dtype: str = "float32") -> Params:
    """`params` in the layout that samples fastest; build it once and pass it to `init_decode` /
    `decode_step` / `decoding.sample`. Not for training. weights_dtype (one of `WEIGHT_DTYPES`): 'float32'
    keeps the numbers up to float32 round-off; 'bfloat16' stores the matmul weights bfloat16 (inexact), where
    the backbone supports it."""


@dataclasses.dataclass(frozen=True)
class LoadedBackbone:
  """Convenience bundle returned by `msp_jax.backbones.load_backbone`."""

  backbone: Backbone
  source: str        # what the user asked for: a registered name or a path
  checkpoint_format: str  # 'gguf', 'hf_safetensors', 't5x_legacy', 't5x_orbax', 'random'
