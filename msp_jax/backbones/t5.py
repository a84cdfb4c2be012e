"""T5 v1.1 encoder-decoder in Flax linen, with exactly the parameter tree T5X writes.

The tree (so T5X checkpoints load unchanged; docs/design.md, "T5 v1.1 (encoder-decoder)"):

  token_embedder/embedding                       [vocab, embed]
  encoder/relpos_bias/rel_embedding              [heads, relpos_buckets]   shared by all encoder layers
  encoder/layers_i/pre_attention_layer_norm/scale [embed]
  encoder/layers_i/attention/{query,key,value}/kernel [embed, heads*head_dim]; out/kernel [heads*head_dim, embed]
  encoder/layers_i/pre_mlp_layer_norm/scale, mlp/{wi_0,wi_1}/kernel [embed, mlp], mlp/wo/kernel [mlp, embed]
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding              (the decoder's own, causal buckets)
  decoder/layers_i/{pre_self_attention_layer_norm, self_attention, pre_cross_attention_layer_norm,
                    encoder_decoder_attention, pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                    [embed, vocab]            untied from the embedding

Numerics as in T5 v1.1: RMSNorm in float32 (eps 1e-6, scale only), no biases anywhere, gated-gelu MLP
`gelu_tanh(x @ wi_0) * (x @ wi_1) @ wo`, attention logits *not* divided by sqrt(head_dim) (T5 folds that into
the query initialisation), embeddings not scaled, relative position buckets (bidirectional in the encoder,
causal in the decoder), no position bias in cross-attention.

Decoding keeps a functional cache (a pytree with static shapes, a valid `lax.while_loop` carry): per decoder
layer the self-attention keys/values `[batch, max_len, heads, head_dim]` written in place with
`lax.dynamic_update_slice`, and the cross-attention keys/values computed once from the encoder output.

One file holds the whole backbone (config, encoder, decoder, parameter tree, decode wrapper), as T5X's
`network.py` does: over 400 lines because a reader follows one tensor through all of it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.backbones.base import Cache, Params, Tokenizer
from msp_jax.errors import CheckpointError, ConfigError

# Large negative logit for masked keys (what T5X uses); finite so fully-masked rows stay NaN-free.
_MASK_VALUE = -1e10

Initializer = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Sizes and dtypes of a T5 v1.1 model. `dtype` is the compute dtype, `param_dtype` the storage dtype."""

  embed_dim: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  mlp_dim: int
  head_dim: int = 64
  vocab_size: int = 32128
  relpos_buckets: int = 32
  relpos_max_distance: int = 128
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  layer_norm_eps: float = 1e-6

  def __post_init__(self):
    # One canonical dtype object, so equal configs also hash equal (jit caches key on them).
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))

  @property
  def joined_kv(self) -> int:
    return self.num_heads * self.head_dim


T5_CONFIGS: dict[str, T5Config] = {
    # Tests only: big enough to exercise every code path, small enough to compile in seconds.
    "tiny": T5Config(embed_dim=32, num_heads=4, head_dim=8, num_encoder_layers=2, num_decoder_layers=2,
                     mlp_dim=64),
    "small": T5Config(embed_dim=512, num_heads=6, num_encoder_layers=8, num_decoder_layers=8, mlp_dim=1024),
    "base": T5Config(embed_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, mlp_dim=2048),
    "large": T5Config(embed_dim=1024, num_heads=16, num_encoder_layers=24, num_decoder_layers=24,
                      mlp_dim=2816),
    "xl": T5Config(embed_dim=2048, num_heads=32, num_encoder_layers=24, num_decoder_layers=24, mlp_dim=5120),
    "xxl": T5Config(embed_dim=4096, num_heads=64, num_encoder_layers=24, num_decoder_layers=24,
                    mlp_dim=10240),
}


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """T5's log-spaced buckets for `relative_position = key_position - query_position` (int32, any shape).

  Half the buckets are exact offsets, the rest grow logarithmically up to `max_distance`. Bidirectional (the
  encoder) spends half the buckets on keys after the query; unidirectional (the decoder) maps every future
  key to bucket 0, which the causal mask hides anyway.
  """
  relative_position = relative_position.astype(jnp.int32)
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # float32 log as in the reference implementations; max(distance, 1) only avoids log(0) in the unused branch.
  log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) /
               np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


def _normal(stddev: float) -> Initializer:
  return nn.initializers.normal(stddev=stddev)


class RMSNorm(nn.Module):
  """Scale-only RMS normalisation over the last axis, computed in float32."""

  eps: float
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return x32.astype(self.dtype) * scale.astype(self.dtype)


class Dense(nn.Module):
  """A bias-free projection with a 2-D kernel `[in, features]` tagged with logical axes."""

  features: int
  axes: tuple[str, str]
  dtype: Any
  param_dtype: Any
  kernel_init: Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), self.param_dtype)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class MlpBlock(nn.Module):
  """Gated-GELU MLP: `gelu_tanh(x @ wi_0) * (x @ wi_1) @ wo`, [..., embed] -> [..., embed]."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    dense = lambda n, axes, std, name: Dense(n, axes, cfg.dtype, cfg.param_dtype, _normal(std), name=name)
    gate = dense(cfg.mlp_dim, ("embed", "mlp"), cfg.embed_dim**-0.5, "wi_0")(x)
    linear = dense(cfg.mlp_dim, ("embed", "mlp"), cfg.embed_dim**-0.5, "wi_1")(x)
    hidden = jax.nn.gelu(gate, approximate=True) * linear
    return dense(cfg.embed_dim, ("mlp", "embed"), cfg.mlp_dim**-0.5, "wo")(hidden)


class Attention(nn.Module):
  """Multi-head dot-product attention without scaling or biases; callers supply the additive bias."""

  config: T5Config

  def setup(self):
    cfg = self.config
    d, inner = cfg.embed_dim, cfg.joined_kv
    # Query init carries the 1/sqrt(head_dim) that the forward pass leaves out (as T5 does).
    self.query = Dense(inner, ("embed", "joined_kv"), cfg.dtype, cfg.param_dtype,
                       _normal((d * cfg.head_dim)**-0.5))
    self.key = Dense(inner, ("embed", "joined_kv"), cfg.dtype, cfg.param_dtype, _normal(d**-0.5))
    self.value = Dense(inner, ("embed", "joined_kv"), cfg.dtype, cfg.param_dtype, _normal(d**-0.5))
    self.out = Dense(d, ("joined_kv", "embed"), cfg.dtype, cfg.param_dtype, _normal(inner**-0.5))

  def _split_heads(self, x: jax.Array) -> jax.Array:
    """[batch, length, heads*head_dim] -> [batch, length, heads, head_dim]."""
    return x.reshape(x.shape[:-1] + (self.config.num_heads, self.config.head_dim))

  def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [batch, kv_len, embed] -> keys, values, each [batch, kv_len, heads, head_dim]."""
    return self._split_heads(self.key(x)), self._split_heads(self.value(x))

  def attend(self, x: jax.Array, keys: jax.Array, values: jax.Array, bias: jax.Array) -> jax.Array:
    """x [batch, q_len, embed] attends to keys/values [batch, kv_len, heads, head_dim].

    `bias` broadcasts to [batch, heads, q_len, kv_len] (float32: position bias plus the mask).
    Returns [batch, q_len, embed].
    """
    queries = self._split_heads(self.query(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", queries, keys.astype(self.config.dtype))
    weights = jax.nn.softmax(logits.astype(jnp.float32) + bias, axis=-1).astype(self.config.dtype)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, values.astype(self.config.dtype))
    return self.out(mixed.reshape(mixed.shape[:2] + (self.config.joined_kv,)))

  def __call__(self, x: jax.Array, kv_input: jax.Array, bias: jax.Array) -> jax.Array:
    return self.attend(x, *self.project_kv(kv_input), bias)


class RelativePositionBias(nn.Module):
  """Learned per-head scalar for each relative-position bucket: rel_embedding [heads, buckets]."""

  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """positions [batch, q_len] and [batch, kv_len] (int) -> bias [batch, heads, q_len, kv_len] float32."""
    cfg = self.config
    table = self.param("rel_embedding",
                       nn.with_logical_partitioning(_normal(1.0), ("heads", "relpos_buckets")),
                       (cfg.num_heads, cfg.relpos_buckets), cfg.param_dtype)
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [batch, q_len, kv_len]
    buckets = relative_position_bucket(relative, self.bidirectional, cfg.relpos_buckets,
                                       cfg.relpos_max_distance)
    bias = jnp.take(table.astype(jnp.float32), buckets, axis=1)  # [heads, batch, q_len, kv_len]
    return jnp.transpose(bias, (1, 0, 2, 3))


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    h = norm("pre_attention_layer_norm")(x)
    x = x + Attention(cfg, name="attention")(h, h, bias)
    return x + MlpBlock(cfg, name="mlp")(norm("pre_mlp_layer_norm")(x))


class Encoder(nn.Module):
  config: T5Config

  def setup(self):
    cfg = self.config
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=True)
    self.layers = [EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers)]
    self.encoder_norm = RMSNorm(cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [batch, len, embed], mask [batch, len] (1 = real, anywhere) -> encoded [batch, len, embed].

    Positions count real tokens only (`cumsum(mask) - 1`), so a gap of padding between a soft prompt and the
    text does not change the relative distances.
    """
    mask = mask.astype(bool)
    positions = jnp.cumsum(mask, axis=-1) - 1
    bias = self.relpos_bias(positions, positions)
    bias = bias + jnp.where(mask[:, None, None, :], 0.0, _MASK_VALUE)
    x = x.astype(self.config.dtype)
    for layer in self.layers:
      x = layer(x, bias)
    return self.encoder_norm(x)


class DecoderLayer(nn.Module):
  config: T5Config

  def setup(self):
    cfg = self.config
    norm = lambda: RMSNorm(cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype)
    self.pre_self_attention_layer_norm = norm()
    self.self_attention = Attention(cfg)
    self.pre_cross_attention_layer_norm = norm()
    self.encoder_decoder_attention = Attention(cfg)
    self.pre_mlp_layer_norm = norm()
    self.mlp = MlpBlock(cfg)

  def cross_kv(self, encoded: jax.Array) -> tuple[jax.Array, jax.Array]:
    """encoded [batch, in_len, embed] -> cross-attention keys, values [batch, in_len, heads, head_dim]."""
    return self.encoder_decoder_attention.project_kv(encoded)

  def __call__(self, x: jax.Array, encoded: jax.Array | None, self_bias: jax.Array, cross_bias: jax.Array,
               layer_cache: dict[str, jax.Array] | None = None,
               cache_index: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array] | None]:
    """Teacher forcing when `layer_cache` is None; otherwise one step written at `cache_index`.

    x [batch, dec_len, embed] (dec_len = 1 when decoding). Returns (x, updated layer cache or None).
    """
    h = self.pre_self_attention_layer_norm(x)
    keys, values = self.self_attention.project_kv(h)
    if layer_cache is not None:
      start = (0, cache_index, 0, 0)
      keys = jax.lax.dynamic_update_slice(layer_cache["self_keys"], keys.astype(layer_cache["self_keys"].dtype),
                                          start)
      values = jax.lax.dynamic_update_slice(layer_cache["self_values"],
                                            values.astype(layer_cache["self_values"].dtype), start)
      layer_cache = dict(layer_cache, self_keys=keys, self_values=values)
    x = x + self.self_attention.attend(h, keys, values, self_bias)

    h = self.pre_cross_attention_layer_norm(x)
    if layer_cache is not None:
      cross_keys, cross_values = layer_cache["cross_keys"], layer_cache["cross_values"]
    else:
      cross_keys, cross_values = self.cross_kv(encoded)
    x = x + self.encoder_decoder_attention.attend(h, cross_keys, cross_values, cross_bias)
    return x + self.mlp(self.pre_mlp_layer_norm(x)), layer_cache


class Decoder(nn.Module):
  config: T5Config

  def setup(self):
    cfg = self.config
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=False)
    self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)]
    self.decoder_norm = RMSNorm(cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype)
    self.logits_dense = Dense(cfg.vocab_size, ("embed", "vocab"), cfg.dtype, cfg.param_dtype,
                              _normal(cfg.embed_dim**-0.5))

  def __call__(self, x: jax.Array, encoded: jax.Array, encoded_mask: jax.Array) -> jax.Array:
    """Teacher forcing: x [batch, dec_len, embed] (embedded shifted targets) -> logits [batch, dec_len, vocab]."""
    batch, length = x.shape[:2]
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    causal = positions[:, :, None] >= positions[:, None, :]  # [batch, q, k]
    self_bias = self.relpos_bias(positions, positions) + jnp.where(causal[:, None], 0.0, _MASK_VALUE)
    cross_bias = _key_mask_bias(encoded_mask)
    x = x.astype(self.config.dtype)
    for layer in self.layers:
      x, _ = layer(x, encoded, self_bias, cross_bias)
    return self.logits_dense(self.decoder_norm(x)).astype(jnp.float32)

  def cross_kv(self, encoded: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
    return [layer.cross_kv(encoded) for layer in self.layers]

  def step(self, x: jax.Array, cache: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One decoding step: x [batch, 1, embed] at position `cache['index']` -> logits [batch, vocab], cache."""
    index = cache["index"]
    batch = x.shape[0]
    max_len = cache["layers_0"]["self_keys"].shape[1]
    key_positions = jnp.broadcast_to(jnp.arange(max_len), (batch, max_len))
    query_positions = jnp.full((batch, 1), index)
    self_bias = self.relpos_bias(query_positions, key_positions)
    # Slots after `index` are still zeros: hide them.
    self_bias = self_bias + jnp.where(key_positions <= index, 0.0, _MASK_VALUE)[:, None, None, :]
    cross_bias = _key_mask_bias(cache["encoded_mask"])
    x = x.astype(self.config.dtype)
    new_cache = dict(cache, index=index + 1)
    for i, layer in enumerate(self.layers):
      x, new_cache[f"layers_{i}"] = layer(x, None, self_bias, cross_bias, cache[f"layers_{i}"], index)
    logits = self.logits_dense(self.decoder_norm(x)).astype(jnp.float32)
    return logits[:, 0], new_cache


def _key_mask_bias(mask: jax.Array) -> jax.Array:
  """mask [batch, kv_len] -> additive bias [batch, 1, 1, kv_len] (0 for real keys, -1e10 for padding)."""
  return jnp.where(mask.astype(bool)[:, None, None, :], 0.0, _MASK_VALUE)


class T5Transformer(nn.Module):
  """The whole model. `__call__` (used by `init`) runs encoder and decoder once over token ids."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(
        cfg.vocab_size, cfg.embed_dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=nn.with_logical_partitioning(_normal(1.0), ("vocab", "embed")))
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)

  def embed(self, tokens: jax.Array) -> jax.Array:
    return self.token_embedder(tokens)

  def encode(self, inputs_embeds: jax.Array, inputs_mask: jax.Array) -> jax.Array:
    return self.encoder(inputs_embeds, inputs_mask)

  def decode(self, encoded: jax.Array, encoded_mask: jax.Array, decoder_tokens: jax.Array) -> jax.Array:
    return self.decoder(self.embed(decoder_tokens), encoded, encoded_mask)

  def init_cache(self, encoded: jax.Array, encoded_mask: jax.Array, max_len: int) -> dict[str, Any]:
    cfg = self.config
    batch = encoded.shape[0]
    empty = jnp.zeros((batch, max_len, cfg.num_heads, cfg.head_dim), cfg.dtype)
    cache: dict[str, Any] = {"index": jnp.zeros((), jnp.int32), "encoded_mask": encoded_mask.astype(bool)}
    for i, (keys, values) in enumerate(self.decoder.cross_kv(encoded)):
      cache[f"layers_{i}"] = {"self_keys": empty, "self_values": empty,
                              "cross_keys": keys.astype(cfg.dtype), "cross_values": values.astype(cfg.dtype)}
    return cache

  def decode_step(self, cache: dict[str, Any], tokens: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    return self.decoder.step(self.embed(tokens[:, None]), cache)

  def __call__(self, tokens: jax.Array, mask: jax.Array, decoder_tokens: jax.Array) -> jax.Array:
    return self.decode(self.encode(self.embed(tokens), mask), mask, decoder_tokens)


def _unbox(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: x.unbox() if isinstance(x, nn.LogicallyPartitioned) else x, tree,
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _init_variables(config: T5Config, rng: jax.Array) -> Any:
  dummy = jnp.zeros((1, 2), jnp.int32)
  return T5Transformer(config).init(rng, dummy, jnp.ones((1, 2), jnp.int32), dummy)["params"]


def init_params(config: T5Config, rng: jax.Array) -> Params:
  """Random parameters with the T5X tree (plain nested dicts of arrays in `config.param_dtype`)."""
  return _unbox(jax.jit(_init_variables, static_argnums=0)(config, rng))


def param_axes(config: T5Config) -> Any:
  """A tree matching the parameters whose leaves are logical axis tuples, e.g. ('embed', 'joined_kv')."""
  boxed = jax.eval_shape(functools.partial(_init_variables, config), jax.random.key(0))
  return jax.tree_util.tree_map(lambda x: tuple(x.names), boxed,
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _layer_count(tree: dict[str, Any]) -> int:
  return sum(1 for key in tree if re.fullmatch(r"layers_\d+", key))


def config_from_params(params: Params, dtype: Any = jnp.float32, relpos_max_distance: int = 128) -> T5Config:
  """Infers a `T5Config` from the shapes of a T5X parameter tree (e.g. one read from a checkpoint).

  Heads come from the relative position table `[heads, buckets]`, head_dim from the query kernel width.
  Raises CheckpointError when the tree is not a T5 v1.1 tree (e.g. a v1.0 ReLU MLP with a single `wi`).
  """
  try:
    embedding = params["token_embedder"]["embedding"]
    encoder, decoder = params["encoder"], params["decoder"]
    rel = encoder["relpos_bias"]["rel_embedding"]
    layer0 = encoder["layers_0"]
    query = layer0["attention"]["query"]["kernel"]
    mlp = layer0["mlp"]
    if "wi_0" not in mlp:
      raise CheckpointError(
          f"encoder/layers_0/mlp has {sorted(mlp)}; expected the T5 v1.1 gated MLP (wi_0, wi_1, wo). "
          "T5 v1.0 (single ReLU 'wi') is not supported")
    wi = mlp["wi_0"]["kernel"]
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"not a T5X T5 v1.1 parameter tree: missing {e}; top-level keys: "
                          f"{sorted(params) if isinstance(params, dict) else type(params).__name__}") from e
  heads, buckets = rel.shape
  return T5Config(vocab_size=int(embedding.shape[0]), embed_dim=int(embedding.shape[1]), num_heads=int(heads),
                  head_dim=int(query.shape[1]) // int(heads), num_encoder_layers=_layer_count(encoder),
                  num_decoder_layers=_layer_count(decoder), mlp_dim=int(wi.shape[1]),
                  relpos_buckets=int(buckets), relpos_max_distance=relpos_max_distance, dtype=dtype,
                  param_dtype=jnp.dtype(embedding.dtype))


def shift_right(targets: jax.Array, bos_id: int = 0) -> jax.Array:
  """targets [batch, len] -> decoder inputs [batch, len]: BOS first, then targets[:, :-1]."""
  return jnp.concatenate([jnp.full_like(targets[:, :1], bos_id), targets[:, :-1]], axis=1)


class T5Backbone:
  """A frozen T5 v1.1 implementing `msp_jax.backbones.base.Backbone`. Methods are pure in `params`."""

  is_encoder_decoder = True
  bos_id = 0  # Decoder start token (= pad).

  def __init__(self, config: T5Config, params: Params, tokenizer: Tokenizer | None, name: str = "t5"):
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.name = name
    self.model = T5Transformer(config)

  @property
  def embed_dim(self) -> int:
    return self.config.embed_dim

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  def param_axes(self) -> Any:
    return param_axes(self.config)

  def inference_params(self, params: Params, weights_dtype: str = "float32") -> Params:
    """T5 samples from its checkpoint layout as it is (float32 only)."""
    if weights_dtype != "float32":
      raise ConfigError(f"weights_dtype={weights_dtype!r}: T5 backbones sample in float32; bind "
                        "msp.SamplingConfig.weights_dtype = 'float32'")
    return params

  def _apply(self, params: Params, method: Callable[..., Any], *args: Any) -> Any:
    return self.model.apply({"params": params}, *args, method=method)

  def embed(self, params: Params, tokens: jax.Array) -> jax.Array:
    """tokens [batch, length] -> [batch, length, embed] (T5 does not scale embeddings)."""
    return self._apply(params, T5Transformer.embed, tokens)

  def encode(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array) -> jax.Array:
    """[batch, in_len, embed] + mask [batch, in_len] -> encoder output [batch, in_len, embed]."""
    return self._apply(params, T5Transformer.encode, inputs_embeds, inputs_mask)

  def target_logits(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                    targets: jax.Array, targets_mask: jax.Array) -> jax.Array:
    """Teacher-forced logits [batch, tgt_len, vocab]; the decoder reads targets shifted right (BOS 0)."""
    encoded = self.encode(params, inputs_embeds, inputs_mask)
    decoder_tokens = shift_right(targets * targets_mask.astype(targets.dtype), self.bos_id)
    return self._apply(params, T5Transformer.decode, encoded, inputs_mask, decoder_tokens)

  def init_decode(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                  max_new_tokens: int) -> tuple[jax.Array, Cache]:
    """Encodes once, feeds BOS; returns logits [batch, vocab] for the first new token and the cache.

    The self-attention cache holds `max_new_tokens + 1` positions, so a loop may call `decode_step` once per
    generated token (the last call's logits are simply unused).
    """
    encoded = self.encode(params, inputs_embeds, inputs_mask)
    cache = self._apply(params, T5Transformer.init_cache, encoded, inputs_mask, max_new_tokens + 1)
    bos = jnp.full((inputs_embeds.shape[0],), self.bos_id, jnp.int32)
    return self.decode_step(params, cache, bos)

  def decode_step(self, params: Params, cache: Cache, tokens: jax.Array) -> tuple[jax.Array, Cache]:
    """tokens [batch] (the last sampled) -> logits [batch, vocab] for the next token, updated cache."""
    return self._apply(params, T5Transformer.decode_step, cache, tokens.astype(jnp.int32))


def random_t5_backbone(config: T5Config, rng: jax.Array, tokenizer: Tokenizer | None = None,
                       name: str = "t5-random") -> T5Backbone:
  """A randomly initialised backbone (tests, benchmarks)."""
  return T5Backbone(config, init_params(config, rng), tokenizer, name)


__all__: Sequence[str] = ("T5Config", "T5_CONFIGS", "T5Backbone", "T5Transformer", "config_from_params",
                          "init_params", "param_axes", "relative_position_bucket", "shift_right",
                          "random_t5_backbone")
