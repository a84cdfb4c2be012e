"""A BERT encoder in Flax (all-MiniLM-L6-v2's architecture): per-token hidden states and sentence embeddings.

The model is what sentence-transformers runs for all-MiniLM-L6-v2 (`modules.json`: Transformer -> Pooling ->
Normalize):

  * word + absolute position + token type embeddings -> LayerNorm, then `num_layers` post-LayerNorm blocks
    (self-attention with biases, GELU (exact erf) MLP hidden -> intermediate -> hidden), LayerNorm eps 1e-12;
  * mean pooling of the last hidden states over the attention mask;
  * L2 normalisation, so the cosine of two embeddings is their dot product.

Parameter tree (2-D kernels stored [in, out]; `precision.matmul_params` may store them in bfloat16 or packed):

  embeddings/word_embeddings/embedding        [vocab, hidden]
  embeddings/position_embeddings/embedding    [max_position_embeddings, hidden]
  embeddings/token_type_embeddings/embedding  [type_vocab, hidden]
  embeddings/layer_norm/{scale, bias}         [hidden]
  layers_{i}/attention/{query,key,value,out}/{kernel [hidden, hidden], bias [hidden]}
  layers_{i}/attention_norm/{scale, bias}     [hidden]
  layers_{i}/mlp/wi/{kernel [hidden, intermediate], bias [intermediate]}
  layers_{i}/mlp/wo/{kernel [intermediate, hidden], bias [hidden]}
  layers_{i}/mlp_norm/{scale, bias}           [hidden]

Pure functions, usable inside larger jitted (and differentiated) code: `hidden_states` (padded batch ->
[batch, length, hidden], what a tagger or a fine-tuned head reads), `embed_fn` (padded batch -> unit-norm
[batch, hidden]) and `embed_packed_fn` (texts end to end, CPU attention kernel -> [texts, hidden]).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from msp_jax.encoders.precision import DenseWeights, concat_kernels, dense
from msp_jax.errors import ConfigError
from msp_jax.kernels import segment_attention

Params = Any  # the nested dict of the module docstring


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyper-parameters of a BERT encoder. Defaults are all-MiniLM-L6-v2 (`config.json` of the wheel)."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  max_seq_length: int = 256  # sentence-transformers' truncation, [CLS] and [SEP] included

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ConfigError(f"BertConfig: hidden_size={self.hidden_size} must be a multiple of "
                        f"num_heads={self.num_heads}")
    if self.max_seq_length > self.max_position_embeddings:
      raise ConfigError(f"BertConfig: max_seq_length={self.max_seq_length} exceeds "
                        f"max_position_embeddings={self.max_position_embeddings}")


Attend = Callable[[jax.Array], jax.Array]  # qkv [..., 3 hidden] -> attention output [..., hidden]


def padded_attention(qkv: jax.Array, mask: jax.Array, num_heads: int) -> jax.Array:
  """Bidirectional multi-head attention on right-padded batches; padded keys are never attended to.

  qkv [batch, length, 3 hidden] (queries, keys, values, each head-major), mask [batch, length] (1 = real)
  -> [batch, length, hidden].
  """
  batch, length, width = qkv.shape
  head_dim = width // (3 * num_heads)
  # Heads before positions: the two contractions are then plain batched matmuls over [batch, heads].
  q, k, v = qkv.reshape(batch, length, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q * np.float32(1 / np.sqrt(head_dim)), k)  # [batch, heads, q, k]
  # A large finite negative (not -inf): an all-pad row (a padded batch slot) gets a uniform softmax, not NaN.
  logits = jnp.where(mask[:, None, None, :].astype(bool), logits, -1e30)
  out = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, axis=-1), v)
  return out.transpose(0, 2, 1, 3).reshape(batch, length, width // 3)


class SelfAttention(nn.Module):
  """Multi-head self-attention with biases: one fused Q/K/V projection, `attend`, the output projection."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, attend: Attend) -> jax.Array:
    """x [..., hidden] -> [..., hidden]; `attend` knows the layout (padded batch or packed sequences)."""
    hidden = self.config.hidden_size
    kernels, biases = zip(*(DenseWeights(hidden, hidden, name=n)() for n in ("query", "key", "value")))
    qkv = dense(x, concat_kernels(kernels), jnp.concatenate(biases))
    return dense(attend(qkv), *DenseWeights(hidden, hidden, name="out")())


def gelu(x: jax.Array) -> jax.Array:
  """BERT's exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), written with `erf` (about 2x faster on
  XLA's CPU backend than `jax.nn.gelu(approximate=False)`, within float32 round-off of it)."""
  return 0.5 * x * (1.0 + jax.scipy.special.erf(x * np.float32(1 / np.sqrt(2))))


class Mlp(nn.Module):
  """wi -> GELU -> wo. BERT's "gelu" is the exact erf form, not the tanh approximation."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., hidden] -> [..., hidden]."""
    cfg = self.config
    h = dense(x, *DenseWeights(cfg.hidden_size, cfg.intermediate_size, name="wi")())
    return dense(gelu(h), *DenseWeights(cfg.intermediate_size, cfg.hidden_size, name="wo")())


class BertLayer(nn.Module):
  """Post-LayerNorm block: x = LN(x + attention(x)); x = LN(x + mlp(x))."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, attend: Attend) -> jax.Array:
    """x [..., hidden] -> [..., hidden]."""
    cfg = self.config
    x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="attention_norm")(
        x + SelfAttention(cfg, name="attention")(x, attend))
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="mlp_norm")(x + Mlp(cfg, name="mlp")(x))


class Embeddings(nn.Module):
  """LayerNorm(word + absolute position + token type embeddings)."""

  config: BertConfig

  @nn.compact
  def __call__(self, token_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """token_ids [...] int32, positions [...] int32 (each token's place in its own text) -> [..., hidden]."""
    cfg = self.config
    x = (nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(token_ids)
         + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(positions)
         # Single sentences: token type 0 everywhere.
         + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(
             jnp.zeros_like(token_ids)))
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="layer_norm")(x)


class BertEncoder(nn.Module):
  """Token ids -> last hidden states (what sentence-transformers' Transformer module returns)."""

  config: BertConfig

  @nn.compact
  def __call__(self, token_ids: jax.Array, positions: jax.Array, attend: Attend) -> jax.Array:
    """token_ids, positions [...] int32 -> [..., hidden]. Layout-agnostic: `attend` mixes the positions of
    each text (padded [batch, length] or packed [tokens], see `hidden_states` and `embed_packed_fn`)."""
    x = Embeddings(self.config, name="embeddings")(token_ids, positions)
    for i in range(self.config.num_layers):
      x = BertLayer(self.config, name=f"layers_{i}")(x, attend)
    return x


def init_params(config: BertConfig, rng: jax.Array) -> Params:
  """Randomly initialised float32 parameters of the module docstring's tree (tests, small experiments)."""
  ids = jnp.zeros((1, 1), jnp.int32)
  attend = functools.partial(padded_attention, mask=jnp.ones((1, 1), jnp.int32), num_heads=config.num_heads)
  return BertEncoder(config).init(rng, ids, ids, attend)["params"]


def hidden_states(params: Params, token_ids: jax.Array, mask: jax.Array, config: BertConfig = BertConfig()
                  ) -> jax.Array:
  """Last-layer hidden state of every word piece: token_ids [batch, length] int32, mask [batch, length]
  (1 = real) -> [batch, length, hidden] float32.

  Right padding: positions 0..length-1 as in Hugging Face BERT, so real tokens keep their positions and their
  states do not depend on the padding after them. Pure and jit/grad-friendly (`config` is static).
  """
  positions = jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
  attend = functools.partial(padded_attention, mask=mask, num_heads=config.num_heads)
  return BertEncoder(config).apply({"params": params}, token_ids, positions, attend)


def mean_pool_normalize(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean over length, then L2 normalisation: hidden [batch, length, d], mask [batch, length] -> [batch, d].

  The clamps are sentence-transformers' (count >= 1e-9) and torch's F.normalize (norm >= 1e-12), so an
  all-padding row gives a zero vector, not NaN.
  """
  mask = mask.astype(hidden.dtype)[..., None]
  return _normalize((hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9))


def _normalize(pooled: jax.Array) -> jax.Array:
  """[n, d] rows over their L2 norm (at least 1e-12, as torch's F.normalize)."""
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def embed_fn(params: Params, token_ids: jax.Array, mask: jax.Array, config: BertConfig = BertConfig()
             ) -> jax.Array:
  """Sentence embeddings: token_ids [batch, length] int32, mask [batch, length] -> [batch, hidden], unit norm.

  Pure and jit-friendly (`config` is static: hashable dataclass); call it inside larger jitted code.
  """
  return mean_pool_normalize(hidden_states(params, token_ids, mask, config), mask)


def embed_packed_fn(params: Params, token_ids: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                    starts: jax.Array, config: BertConfig = BertConfig()) -> jax.Array:
  """Sentence embeddings of texts packed end to end: [texts, hidden], unit norm. CPU only (the attention is
  the `segment_attention` custom call); same numbers as `embed_fn` up to float32 round-off.

  Args:
    token_ids: [tokens] int32, the texts' ids one after another, then padding (any id).
    positions: [tokens] int32, each token's place in its text (0 at [CLS]).
    segment_ids: [tokens] int32, each token's text (0 .. texts - 1); `texts` for padding.
    starts: [texts + 1] int32, text s is tokens starts[s] .. starts[s + 1] - 1 (empty texts allowed: their
      embedding is 0).
  """
  attend = functools.partial(segment_attention.attention, starts=starts, num_heads=config.num_heads)
  hidden = BertEncoder(config).apply({"params": params}, token_ids, positions, attend)  # [tokens, hidden]
  texts = starts.shape[0] - 1
  sums = jax.ops.segment_sum(hidden, segment_ids, num_segments=texts + 1)[:texts]  # padding -> dropped row
  counts = (starts[1:] - starts[:-1]).astype(hidden.dtype)[:, None]
  return _normalize(sums / jnp.maximum(counts, 1e-9))
