"""Llama-family decoder-only backbone (SmolLM2, Llama, Qwen-style) in Flax linen.

RMSNorm -> grouped-query attention with rotary embeddings -> RMSNorm -> SwiGLU MLP, pre-norm residual
blocks, no biases. Rotary embeddings use the Hugging Face "rotate half" layout (dimension i pairs with
i + head_dim/2); GGUF files store Q/K rows permuted for llama.cpp's interleaved layout and
`gguf_checkpoint.py` undoes that on load.

Parameter tree (2-D kernels stored [in, out], what `hf_llama.py` and `gguf_checkpoint.py` produce):

  token_embedder/embedding            [vocab, embed]
  layers_{i}/attention_norm/scale     [embed]
  layers_{i}/attention/query/kernel   [embed, heads * head_dim]
  layers_{i}/attention/key/kernel     [embed, kv_heads * head_dim]
  layers_{i}/attention/value/kernel   [embed, kv_heads * head_dim]
  layers_{i}/attention/out/kernel     [heads * head_dim, embed]
  layers_{i}/mlp_norm/scale           [embed]
  layers_{i}/mlp/wi_0/kernel          [embed, mlp]   (gate, SiLU)
  layers_{i}/mlp/wi_1/kernel          [embed, mlp]   (up)
  layers_{i}/mlp/wo/kernel            [mlp, embed]   (down)
  final_norm/scale                    [embed]
  logits_dense/kernel                 [embed, vocab] (only when embeddings are untied)

The KV cache is an explicit pytree of static-shape arrays (per layer keys `[batch * kv_heads, head_dim,
max_len]` and values `[batch * kv_heads, max_len, head_dim]`) updated with `lax.dynamic_update_slice`, so a
`lax.while_loop` over decode steps compiles once per shape.

`fused_params` turns the tree above into the *fused layout* -- Q/K/V kernels concatenated into one
`attention/qkv/kernel`, gate/up into one `mlp/wi/kernel`, and (tied models) the embedding's transpose as
`logits_dense/kernel` -- which every method also accepts: the same math with fewer, faster matmuls. Build it
once per set of frozen weights and pass it wherever the params go (sampling, prompt training); with the plain
tree the concatenations run inside every jitted call (once per call: XLA hoists them out of decode loops).

One file holds the whole backbone (config, layers, parameter tree, fused layout, decode wrapper), as T5X's
`network.py` and flax's examples do: over 400 lines because a reader follows one tensor through all of it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.backbones.base import WEIGHT_DTYPES, Cache, Params, Tokenizer
from msp_jax.backbones.param_checks import check_params_match
from msp_jax.errors import CheckpointError, ConfigError
from msp_jax.kernels import bf16_matmul, cpu_matmul
from msp_jax.mixed_precision import bfloat16_matmul


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Hyper-parameters of a Llama-family decoder. Defaults are SmolLM2-135M."""

  vocab_size: int = 49152
  embed_dim: int = 576
  num_layers: int = 30
  num_heads: int = 9
  num_kv_heads: int = 3
  head_dim: int = 64
  mlp_dim: int = 1536
  rope_base: float = 1e5
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  context_length: int = 8192    # positions the model was trained on (prompt + generated tokens)
  dtype: str = "float32"        # activations / matmul inputs
  param_dtype: str = "float32"  # stored parameters

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(f"LlamaConfig: num_heads={self.num_heads} must be a multiple of "
                        f"num_kv_heads={self.num_kv_heads} (grouped-query attention)")
    if self.head_dim % 2:
      raise ConfigError(f"LlamaConfig: head_dim={self.head_dim} must be even for rotary embeddings")


LLAMA_CONFIGS: dict[str, LlamaConfig] = {
    # A few thousand parameters: unit tests and smoke runs.
    "tiny": LlamaConfig(vocab_size=320, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                        mlp_dim=64, rope_base=1e4, norm_eps=1e-5, tie_embeddings=True, context_length=256),
    "smollm2-135m": LlamaConfig(vocab_size=49152, embed_dim=576, num_layers=30, num_heads=9, num_kv_heads=3,
                                head_dim=64, mlp_dim=1536, rope_base=1e5, norm_eps=1e-5, tie_embeddings=True),
}

# Query positions per block (at most) of causal attention without a cache (`attend_blocks`).
CAUSAL_BLOCK = 48

# A large finite negative instead of -inf: a query whose keys are all masked (a pad row) gets a uniform
# softmax instead of NaNs that would poison gradients.
_MASKED = -1e30


def _init(axes: tuple[str, ...], scale: float = 0.02) -> Any:
  return nn.with_logical_partitioning(nn.initializers.normal(stddev=scale), axes)


class RMSNorm(nn.Module):
  """x / rms(x) * scale, computed in float32 (as HF's LlamaRMSNorm). x [..., embed] -> [..., embed]."""

  eps: float
  dtype: str
  param_dtype: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.dtype(self.param_dtype))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (scale.astype(jnp.float32) * x32).astype(self.dtype)


class Kernel(nn.Module):
  """A bare [in, out] kernel stored at `<name>/kernel` (the tree nn.Dense writes), returned, not applied:
  projections of the same input (Q/K/V, gate/up) are concatenated and run as one matmul."""

  shape: tuple[int, int]
  axes: tuple[str, str]
  param_dtype: str

  @nn.compact
  def __call__(self) -> jax.Array:
    if self.has_variable("params", "kernel"):
      stored = self.get_variable("params", "kernel")
      if stored.ndim in (3, 4):  # Panel-packed for a CPU kernel (`fused_params(pack=True)`).
        return stored
    return self.param("kernel", _init(self.axes), self.shape, jnp.dtype(self.param_dtype))


# Up to this many rows, a panel-packed kernel (`pack=True` in `fused_params`) runs through the CPU decode
# kernel; a longer input (a prefill, a training batch) unpacks it to [in, out] inside the jitted call and uses
# XLA's dot, which is the faster one at those sizes.
SMALL_ROWS = 64


def _project(x: jax.Array, kernels: list[jax.Array], widths: tuple[int, ...], dtype: str) -> list[jax.Array]:
  """x [..., in] -> one output [..., width] per entry of `widths`, computed as ONE matmul.

  `kernels` are either the separate [in, width_i] kernels of the checkpoint tree (concatenated here; inside
  a decode loop XLA hoists that out of the loop), their concatenation, already fused by `fused_params`, or
  that concatenation packed for a CPU kernel by `fused_params(pack=True)`: float32 in 32-column panels
  [panels, in, 32], or bfloat16 in the AVX512-BF16 kernel's panels of row pairs [panels, in / 2, 32, 2].
  Fewer, wider matmuls are markedly faster on CPU at decode batch sizes.
  """
  kernel = kernels[0] if len(kernels) == 1 else jnp.concatenate(kernels, axis=1)
  split = lambda out: jnp.split(out.astype(dtype), np.cumsum(widths[:-1]).tolist(), axis=-1)
  if kernel.ndim == 4:  # bfloat16 panels: the AVX512-BF16 kernel at every row count (inference only).
    return split(bf16_matmul.matmul(x, kernel, jnp.zeros((sum(widths),), jnp.float32)))
  if kernel.ndim == 3:  # Panel-packed (float32).
    if np.prod(x.shape[:-1]) <= SMALL_ROWS:
      return split(cpu_matmul.matmul(x.astype(jnp.float32), kernel, sum(widths)))
    kernel = cpu_matmul.unpack(kernel, sum(widths))
  # Narrower (e.g. bfloat16) weights make a narrower matmul: inputs rounded to it, float32 accumulation.
  # Upcasting the weights instead would be exact but is several times slower on XLA's CPU backend.
  if kernel.dtype == jnp.bfloat16 and jnp.finfo(dtype).bits > 16:
    # The same product, with a gradient whose matmul reads bfloat16 too (prompt training on bfloat16 weights).
    return split(bfloat16_matmul(x.astype(jnp.float32), kernel))
  compute = kernel.dtype if jnp.finfo(kernel.dtype).bits < jnp.finfo(dtype).bits else jnp.dtype(dtype)
  return split(jnp.dot(x.astype(compute), kernel.astype(compute), preferred_element_type=jnp.float32))


def rotary_tables(positions: jax.Array, head_dim: int, base: float, max_position: int
                  ) -> tuple[jax.Array, jax.Array]:
  """positions [batch, length], each < max_position -> (sin, cos) each [batch, length, 1, head_dim], float32.

  Rows of a table computed on the host at trace time (angles rounded to float32 first, as Hugging Face
  does): computed in the graph instead, XLA fuses sin/cos into every rotary consumer and evaluates them
  once per head, forward and backward -- a few percent of a CPU training step.
  """
  inv_freq = (1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))).astype(np.float32)
  angles = np.arange(max_position, dtype=np.float32)[:, None] * inv_freq  # [max_position, head_dim/2]
  angles = np.concatenate([angles, angles], axis=-1)
  sin, cos = jnp.asarray(np.stack([np.sin(angles), np.cos(angles)]))[:, positions]
  return sin[:, :, None], cos[:, :, None]


def apply_rotary(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """Rotates x [batch, length, heads, head_dim] in the rotate-half layout."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def attend_blocks(q: jax.Array, k: jax.Array, v: jax.Array, attend: jax.Array, blocks: int = 1,
                  keys_transposed: bool = False) -> jax.Array:
  """Softmax attention of grouped queries, each group over one KV head.

  q [batch * kv_heads, q_len, group, head_dim] (the `group` query heads sharing a KV head), k and v [batch *
  kv_heads, k_len, head_dim], attend [batch, q_len, k_len] bool -> q's shape. Batch and KV heads share one
  leading dimension so that no size-1 dimension appears at batch 1 (XLA then copies a decode cache).
  keys_transposed: k is [batch * kv_heads, head_dim, k_len], the decode cache's layout, in which the
  one-query score matmul of a decode step reads its right-hand side in its natural layout (much faster).

  blocks > 1 is for causal attention over as many keys as queries: the queries are split into that many
  blocks and block i reads only the keys up to its last query (the others are masked anyway), which skips
  about half of the masked work -- the score and softmax tensors dominate a training step's attention.
  """
  rows, q_len, group, head_dim = q.shape
  batch = attend.shape[0]
  scale = np.float32(1.0 / np.sqrt(head_dim))
  score_spec = "rqd,rds->rqs" if keys_transposed else "rqd,rsd->rqs"
  bounds = np.linspace(0, q_len, blocks + 1).round().astype(int)
  outs = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    keys = hi if blocks > 1 else v.shape[1]
    queries = q[:, lo:hi].reshape(rows, (hi - lo) * group, head_dim)
    key_block = k[..., :keys] if keys_transposed else k[:, :keys]
    scores = jnp.einsum(score_spec, queries, key_block, preferred_element_type=jnp.float32) * scale
    scores = scores.reshape(batch, rows // batch, hi - lo, group, keys)
    scores = jnp.where(attend[:, None, lo:hi, None, :keys], scores, _MASKED)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(rows, (hi - lo) * group, keys)
    outs.append(jnp.einsum("rqs,rsd->rqd", weights, v[:, :keys]).reshape(rows, hi - lo, group, head_dim))
  return outs[0] if blocks == 1 else jnp.concatenate(outs, axis=1)


class Attention(nn.Module):
  """Grouped-query self-attention with rotary embeddings and an optional KV cache."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: jax.Array, sin: jax.Array, cos: jax.Array, attend: jax.Array,
               cache: tuple[jax.Array, jax.Array] | None = None, cache_index: jax.Array | None = None,
               causal_blocks: int = 1) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """x [batch, q_len, embed]; attend [batch, q_len, k_len] bool (k_len = q_len, or the cache length).

    With a cache (`k` [batch * kv_heads, head_dim, max_len], `v` [batch * kv_heads, max_len, head_dim]) the
    new keys/values are written at slot `cache_index` and the queries attend over the whole cache, which is
    read in place (heads before positions: no per-step transposes). Without one, `causal_blocks` > 1 declares
    `attend` causal (see `attend_blocks`).
    """
    cfg = self.config
    batch, q_len, _ = x.shape
    q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    kernel = lambda n_in, n_out, axes, name: Kernel((n_in, n_out), axes, cfg.param_dtype, name=name)()
    if self.has_variable("params", "qkv"):  # The fused layout (`fused_params`).
      kernels = [kernel(cfg.embed_dim, q_dim + 2 * kv_dim, ("embed", "joined_kv"), "qkv")]
    else:
      kernels = [kernel(cfg.embed_dim, q_dim, ("embed", "joined_kv"), "query"),
                 kernel(cfg.embed_dim, kv_dim, ("embed", "joined_kv"), "key"),
                 kernel(cfg.embed_dim, kv_dim, ("embed", "joined_kv"), "value")]
    q, k, v = _project(x, kernels, (q_dim, kv_dim, kv_dim), cfg.dtype)
    group, rows = cfg.num_heads // cfg.num_kv_heads, batch * cfg.num_kv_heads
    q = apply_rotary(q.reshape(batch, q_len, cfg.num_heads, cfg.head_dim), sin, cos)
    q = q.reshape(batch, q_len, cfg.num_kv_heads, group, cfg.head_dim).swapaxes(1, 2)
    q = q.reshape(rows, q_len, group, cfg.head_dim)
    k = apply_rotary(k.reshape(batch, q_len, cfg.num_kv_heads, cfg.head_dim), sin, cos)
    k = k.swapaxes(1, 2).reshape(rows, q_len, cfg.head_dim)
    v = v.reshape(batch, q_len, cfg.num_kv_heads, cfg.head_dim).swapaxes(1, 2).reshape(rows, q_len, cfg.head_dim)

    if cache is None:
      out = attend_blocks(q, k, v, attend, causal_blocks)
      new_cache = None
    else:
      k = jax.lax.dynamic_update_slice(cache[0], k.swapaxes(1, 2).astype(cache[0].dtype), (0, 0, cache_index))
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, cache_index, 0))
      new_cache = (k, v)
      out = attend_blocks(q, k, v, attend, keys_transposed=True)
    out = out.reshape(batch, cfg.num_kv_heads, q_len, group, cfg.head_dim).swapaxes(1, 2)
    out = out.reshape(batch, q_len, q_dim)
    (out,) = _project(out, [kernel(q_dim, cfg.embed_dim, ("joined_kv", "embed"), "out")], (cfg.embed_dim,),
                      cfg.dtype)
    return out, new_cache


class Mlp(nn.Module):
  """SwiGLU: (silu(x @ wi_0) * (x @ wi_1)) @ wo. x [batch, length, embed] -> same shape."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    kernel = lambda n_in, n_out, axes, name: Kernel((n_in, n_out), axes, cfg.param_dtype, name=name)()
    if self.has_variable("params", "wi"):  # The fused layout (`fused_params`).
      kernels = [kernel(cfg.embed_dim, 2 * cfg.mlp_dim, ("embed", "mlp"), "wi")]
    else:
      kernels = [kernel(cfg.embed_dim, cfg.mlp_dim, ("embed", "mlp"), "wi_0"),
                 kernel(cfg.embed_dim, cfg.mlp_dim, ("embed", "mlp"), "wi_1")]
    gate, up = _project(x, kernels, (cfg.mlp_dim, cfg.mlp_dim), cfg.dtype)
    (out,) = _project(nn.silu(gate) * up, [kernel(cfg.mlp_dim, cfg.embed_dim, ("mlp", "embed"), "wo")],
                      (cfg.embed_dim,), cfg.dtype)
    return out


class DecoderLayer(nn.Module):
  """One pre-norm residual block: attention then MLP."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x, sin, cos, attend, cache=None, cache_index=None, causal_blocks=1):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    h, new_cache = Attention(cfg, name="attention")(norm("attention_norm")(x), sin, cos, attend, cache,
                                                     cache_index, causal_blocks)
    x = x + h
    x = x + Mlp(cfg, name="mlp")(norm("mlp_norm")(x))
    return x, new_cache


class LlamaModel(nn.Module):
  """The decoder stack. Methods: `embed`, `__call__` (hidden states), `logits`."""

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(cfg.vocab_size, cfg.embed_dim, dtype=cfg.dtype,
                                   param_dtype=cfg.param_dtype,
                                   embedding_init=_init(("vocab", "embed"), 1.0))
    self.layers = [DecoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype)
    if self._has_output_kernel():
      self.logits_dense = Kernel((cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype)

  def _has_output_kernel(self) -> bool:
    """Untied models own `logits_dense`; the fused layout of a tied one adds the embedding's transpose."""
    return not self.config.tie_embeddings or self.has_variable("params", "logits_dense")

  def embed(self, tokens: jax.Array) -> jax.Array:
    """tokens [batch, length] -> [batch, length, embed] (Llama does not scale its embeddings)."""
    return self.token_embedder(tokens)

  def __call__(self, x: jax.Array, positions: jax.Array, attend: jax.Array, cache: Any = None,
               cache_index: jax.Array | None = None, causal_blocks: int = 1) -> tuple[jax.Array, Any]:
    """x [batch, length, embed], positions [batch, length] -> final-normed hidden [batch, length, embed].

    causal_blocks > 1 (no cache): `attend` is causal; see `attend_blocks`.
    """
    sin, cos = rotary_tables(positions, self.config.head_dim, self.config.rope_base, attend.shape[-1])
    new_cache = []
    for i, layer in enumerate(self.layers):
      x, layer_cache = layer(x, sin, cos, attend, None if cache is None else cache[i], cache_index,
                             causal_blocks)
      new_cache.append(layer_cache)
    return self.final_norm(x), (None if cache is None else tuple(new_cache))

  def logits(self, hidden: jax.Array) -> jax.Array:
    """hidden [..., embed] -> float32 logits [..., vocab]."""
    if self._has_output_kernel():
      (out,) = _project(hidden, [self.logits_dense()], (self.config.vocab_size,), self.config.dtype)
    else:
      out = self.token_embedder.attend(hidden)
    return out.astype(jnp.float32)

  def init_all(self, tokens: jax.Array) -> jax.Array:
    """Touches every parameter once (for `init`)."""
    x = self.embed(tokens)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    attend = jnp.ones((tokens.shape[0], tokens.shape[1], tokens.shape[1]), bool)
    hidden, _ = self(x, positions, attend)
    return self.logits(hidden)


def _boxed_shapes(config: LlamaConfig) -> Any:
  model = LlamaModel(config)
  tokens = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, method=LlamaModel.init_all))["params"]


def init_params(config: LlamaConfig, rng: jax.Array) -> Params:
  """Random parameters (normal(0.02) kernels, N(0,1) embeddings, unit norms) as a plain nested dict."""
  model = LlamaModel(config)
  boxed = model.init(rng, jnp.zeros((1, 2), jnp.int32), method=LlamaModel.init_all)["params"]
  return nn.meta.unbox(boxed)


def param_axes(config: LlamaConfig) -> Any:
  """A tree matching the params whose leaves are tuples of logical axis names."""
  boxed = _boxed_shapes(config)
  return jax.tree.map(lambda p: tuple(p.names), boxed, is_leaf=lambda p: isinstance(p, nn.Partitioned))


def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """{'layers_0/attention/query/kernel': shape, ...} for every parameter (checkpoint validation)."""
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(_boxed_shapes(config)))[0]
  return {_path_name(p): tuple(s.shape) for p, s in flat}


def _path_name(path: Any) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def fused_params(params: Params, weights_dtype: str | None = None, pack: bool = False) -> Params:
  """The fused layout of a Llama tree (see the module docstring): per layer `attention/qkv/kernel`
  [embed, (heads + 2 kv_heads) * head_dim] and `mlp/wi/kernel` [embed, 2 mlp] replace query/key/value and
  wi_0/wi_1; a tied model also gets `logits_dense/kernel` [embed, vocab] = embedding.T. Other leaves are
  shared, not copied. Exact: the same numbers in one matmul instead of several.

  weights_dtype: store the matmul kernels (not the embedding table or the norms) in this dtype, e.g.
  'bfloat16': half the bytes per decode step, but NOT exact -- every matmul then rounds its inputs to
  bfloat16 (float32 accumulation). Default: keep the checkpoint's dtype.
  pack: also store every matmul kernel in the panels of a CPU kernel: inference only (no gradient), one device
  (not partitioned). Float32 weights: 32-column panels [ceil(out / 32), in, 32] (`cpu_matmul.pack`) for the
  decode kernel, the same numbers up to float32 summation order; needs `cpu_matmul.available()`. 'bfloat16':
  panels of row pairs [ceil(out / 32), ceil(in / 2), 32, 2] (`bf16_matmul.pack`) for the AVX512-BF16 kernel,
  which serves decode steps and prefills alike; needs `bf16_matmul.available()`.
  """
  if pack:
    if weights_dtype not in (None,) + WEIGHT_DTYPES:
      raise ConfigError(f"fused_params(pack=True, weights_dtype={weights_dtype!r}): expected one of "
                        f"{', '.join(WEIGHT_DTYPES)}")
    kernel = bf16_matmul if weights_dtype == "bfloat16" else cpu_matmul
    if not kernel.available():
      raise ConfigError(f"fused_params(pack=True, weights_dtype={weights_dtype!r}) needs its CPU matmul kernel "
                        f"({kernel.unavailable_reason()})")
    cast = kernel.pack
  else:
    cast = (lambda w: w) if weights_dtype is None else (lambda w: jnp.asarray(w, weights_dtype))
  out = dict(params)
  for name, layer in params.items():
    if not name.startswith("layers_"):
      continue
    attention, mlp = layer["attention"], layer["mlp"]
    qkv = attention.get("qkv", {}).get("kernel")
    if qkv is None:
      qkv = jnp.concatenate([attention[k]["kernel"] for k in ("query", "key", "value")], axis=1)
    wi = mlp.get("wi", {}).get("kernel")
    if wi is None:
      wi = jnp.concatenate([mlp["wi_0"]["kernel"], mlp["wi_1"]["kernel"]], axis=1)
    out[name] = {**layer,
                 "attention": {"qkv": {"kernel": cast(qkv)}, "out": {"kernel": cast(attention["out"]["kernel"])}},
                 "mlp": {"wi": {"kernel": cast(wi)}, "wo": {"kernel": cast(mlp["wo"]["kernel"])}}}
  output = params.get("logits_dense", {}).get("kernel")
  if output is None:
    output = jnp.asarray(params["token_embedder"]["embedding"]).T
  out["logits_dense"] = {"kernel": cast(output)}
  return out


def _on_one_cpu_device(params: Params) -> bool:
  leaves = jax.tree_util.tree_leaves(params)
  devices = {d for leaf in leaves if isinstance(leaf, jax.Array) for d in leaf.devices()}
  return len(devices) <= 1 and all(d.platform == "cpu" for d in devices) and jax.default_backend() == "cpu"


def config_from_params(params: Params, *, num_heads: int, num_kv_heads: int | None = None,
                       rope_base: float = 1e5, norm_eps: float = 1e-5) -> LlamaConfig:
  """Infers the shape hyper-parameters from a parameter tree; the head split must be given.

  (The kernels are 2-D, so `heads * head_dim` is visible but not how it factors.)
  """
  try:
    vocab, embed = np.shape(params["token_embedder"]["embedding"])
    num_layers = sum(1 for k in params if k.startswith("layers_"))
    layer = params["layers_0"]
    joined = np.shape(layer["attention"]["query"]["kernel"])[1]
    kv_joined = np.shape(layer["attention"]["key"]["kernel"])[1]
    mlp = np.shape(layer["mlp"]["wi_0"]["kernel"])[1]
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"parameter tree is not a Llama tree (missing or malformed {e}); expected keys "
                          "token_embedder/embedding and layers_0/attention/query/kernel ...") from None
  if joined % num_heads:
    raise ConfigError(f"query width {joined} is not divisible by num_heads={num_heads}")
  head_dim = joined // num_heads
  if num_kv_heads is None:
    num_kv_heads = kv_joined // head_dim
  return LlamaConfig(vocab_size=int(vocab), embed_dim=int(embed), num_layers=num_layers, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, head_dim=head_dim, mlp_dim=int(mlp), rope_base=rope_base,
                     norm_eps=norm_eps, tie_embeddings="logits_dense" not in params)


def check_params(config: LlamaConfig, params: Params, source: str, unexpected: Sequence[str] = ()) -> None:
  """Raises CheckpointError naming `source` and the first offending keys if `params` does not fit `config`
  (keys and shapes; a checkpoint's dtype is the reader's business), or naming the first `unexpected` tensors
  a reader found no place for."""
  if unexpected:
    raise CheckpointError(f"{source}: unexpected tensors for a Llama model: {list(unexpected[:3])}")
  check_params_match(nn.meta.unbox(_boxed_shapes(config)), params, source, check_dtype=False)


def causal_blocks(length: int) -> int:
  """How many query blocks `attend_blocks` splits causal attention over `length` positions into."""
  return -(-length // CAUSAL_BLOCK)


def _positions(mask: jax.Array) -> jax.Array:
  """mask [batch, length] -> positions cumsum(mask) - 1, clipped at 0 for leading pads."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _last_real(mask: jax.Array) -> jax.Array:
  """Index of the last real entry per row [batch] (0 for an all-pad row); mask [batch, length >= 1]."""
  length = mask.shape[-1]
  if length == 0:  # static: no position whose output could predict the next token
    raise ConfigError(f"a decoder-only model needs at least one input token, got an empty input "
                      f"(mask of shape {tuple(mask.shape)}); give a non-empty prompt")
  idx = jnp.where(mask.astype(bool), jnp.arange(length)[None, :], -1)
  return jnp.maximum(jnp.max(idx, axis=-1), 0)


@dataclasses.dataclass(eq=False)
class LlamaBackbone:
  """A frozen Llama-family LM behind the `Backbone` protocol (`msp_jax/backbones/base.py`).

  Cache layout (a dict, valid `lax.while_loop` carry):
    layers   tuple over layers of (k [batch * kv_heads, head_dim, max_len], v [batch * kv_heads, max_len,
             head_dim])
    key_mask [batch, max_len] bool: slots that hold a real token
    index    [] int32: the next slot to write (same for every row)
    position [batch] int32: the rotary position of the next token per row
  """

  config: LlamaConfig
  params: Params
  tokenizer: Tokenizer
  name: str = "llama"
  is_encoder_decoder: bool = False

  def __post_init__(self):
    self.model = LlamaModel(self.config)

  @property
  def embed_dim(self) -> int:
    return self.config.embed_dim

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  def param_axes(self) -> Any:
    return param_axes(self.config)

  def fused_params(self, params: Params, weights_dtype: str | None = None, pack: bool = False) -> Params:
    """`params` in the fused layout (module `fused_params`): build once, then sample / train with it."""
    return fused_params(params, weights_dtype, pack)

  def inference_params(self, params: Params, weights_dtype: str = "float32") -> Params:
    """The fastest layout for sampling; not for training (no gradient).

    'float32' (exact): fused, and panel-packed for the CPU decode kernel when the params are float32 on one
    CPU device and the kernel is available. 'bfloat16' (inexact: every matmul rounds its inputs to bfloat16,
    float32 accumulation; the embedding table and norms stay as they are): fused kernels stored bfloat16, in
    the AVX512-BF16 kernel's panels on one CPU device that has it, else through XLA's dot.
    """
    if weights_dtype not in WEIGHT_DTYPES:
      raise ConfigError(f"weights_dtype={weights_dtype!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    on_cpu = _on_one_cpu_device(params)
    if weights_dtype == "bfloat16":
      return fused_params(params, "bfloat16", pack=on_cpu and bf16_matmul.available())
    dtypes = {jnp.dtype(x.dtype) for x in jax.tree_util.tree_leaves(params)}
    pack = dtypes == {jnp.dtype(jnp.float32)} and on_cpu and cpu_matmul.available()
    return fused_params(params, pack=pack)

  def _apply(self, params: Params, *args, method) -> Any:
    return self.model.apply({"params": params}, *args, method=method)

  def embed(self, params: Params, tokens: jax.Array) -> jax.Array:
    """tokens [batch, length] int32 -> [batch, length, embed]."""
    return self._apply(params, tokens, method=LlamaModel.embed)

  def target_logits(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                    targets: jax.Array, targets_mask: jax.Array) -> jax.Array:
    """Teacher-forced logits [batch, tgt_len, vocab] over [inputs; targets] (targets right-padded).

    targets[:, 0] is predicted from the last *real* input position (inputs may be right-padded), and
    targets[:, t] from targets[:, t-1].
    """
    in_len = inputs_embeds.shape[1]
    tgt_len = targets.shape[1]
    x = jnp.concatenate([inputs_embeds.astype(self.config.dtype),
                         self.embed(params, targets).astype(self.config.dtype)], axis=1)
    mask = jnp.concatenate([inputs_mask.astype(bool), targets_mask.astype(bool)], axis=1)
    total = in_len + tgt_len
    causal = jnp.arange(total)[:, None] >= jnp.arange(total)[None, :]
    attend = causal[None] & mask[:, None, :]
    hidden, _ = self._apply(params, x, _positions(mask), attend, None, None, causal_blocks(total),
                            method=LlamaModel.__call__)
    # [batch, tgt_len]: the positions whose outputs predict each target.
    first = _last_real(inputs_mask)[:, None]
    rest = jnp.broadcast_to(in_len + jnp.arange(tgt_len - 1)[None, :], (x.shape[0], tgt_len - 1))
    read = jnp.concatenate([first, rest], axis=1)
    hidden = jnp.take_along_axis(hidden, read[..., None], axis=1)
    return self._apply(params, hidden, method=LlamaModel.logits)

  def init_decode(self, params: Params, inputs_embeds: jax.Array, inputs_mask: jax.Array,
                  max_new_tokens: int) -> tuple[jax.Array, Cache]:
    """Prefills a cache of `in_len + max_new_tokens` slots; returns logits [batch, vocab] and the cache."""
    cfg = self.config
    batch, in_len, _ = inputs_embeds.shape
    max_len = in_len + max_new_tokens
    mask = inputs_mask.astype(bool)
    key_mask = jnp.concatenate([mask, jnp.zeros((batch, max_new_tokens), bool)], axis=1)
    causal = jnp.arange(in_len)[:, None] >= jnp.arange(max_len)[None, :]
    attend = causal[None] & key_mask[:, None, :]
    keys = jnp.zeros((batch * cfg.num_kv_heads, cfg.head_dim, max_len), cfg.dtype)
    values = jnp.zeros((batch * cfg.num_kv_heads, max_len, cfg.head_dim), cfg.dtype)
    layers = tuple((keys, values) for _ in range(cfg.num_layers))
    hidden, layers = self._apply(params, inputs_embeds.astype(cfg.dtype), _positions(mask), attend, layers,
                                 jnp.int32(0), method=LlamaModel.__call__)
    last = jnp.take_along_axis(hidden, _last_real(mask)[:, None, None], axis=1)[:, 0]
    logits = self._apply(params, last, method=LlamaModel.logits)
    cache = {"layers": layers, "key_mask": key_mask, "index": jnp.int32(in_len),
             "position": jnp.sum(mask, axis=-1, dtype=jnp.int32)}
    return logits, cache

  def decode_step(self, params: Params, cache: Cache, tokens: jax.Array) -> tuple[jax.Array, Cache]:
    """tokens [batch] -> logits [batch, vocab] for the following token, and the updated cache."""
    index = cache["index"]
    key_mask = jax.lax.dynamic_update_slice(cache["key_mask"], jnp.ones((tokens.shape[0], 1), bool),
                                            (0, index))
    x = self.embed(params, tokens[:, None])
    positions = cache["position"][:, None]
    # Slots after `index` are still False in key_mask, so the mask alone is causal.
    attend = key_mask[:, None, :]
    hidden, layers = self._apply(params, x, positions, attend, cache["layers"], index,
                                 method=LlamaModel.__call__)
    logits = self._apply(params, hidden[:, 0], method=LlamaModel.logits)
    return logits, {"layers": layers, "key_mask": key_mask, "index": index + 1,
                    "position": cache["position"] + 1}
