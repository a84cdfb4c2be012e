"""Reads a Hugging Face Llama checkpoint (config.json + *.safetensors) into the `llama.py` parameter tree.

HF stores linear weights [out, in] under `model.layers.{i}.self_attn.q_proj.weight` etc.; our kernels are
[in, out]. HF keeps the rotate-half rotary layout we use, so no row permutation is needed (unlike GGUF).
Tensor names come from the one Llama name table, `llama_names.LLAMA_TENSORS`. Sharded checkpoints
(`model.safetensors.index.json`) are read too.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from msp_jax.backbones.bpe_tokenizer import BpeTokenizer
from msp_jax.backbones.llama import LlamaBackbone, LlamaConfig, check_params
from msp_jax.backbones.llama_names import find_tensor, set_leaf
from msp_jax.errors import CheckpointError

def config_from_hf(hf: dict, path: pathlib.Path) -> LlamaConfig:
  """LlamaConfig from a parsed HF config.json (transformers 4.x and 5.x spellings of rope_theta)."""
  if hf.get("model_type") not in ("llama", "smollm3", "mistral", "qwen2", None):
    raise CheckpointError(f"{path}: model_type is {hf.get('model_type')!r}; expected a Llama-family model")
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise CheckpointError(f"{path}: {flag}=true is not supported (the Llama backbone has no biases)")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
    raise CheckpointError(f"{path}: rope scaling {rope.get('rope_type', rope.get('type'))!r} is not supported")
  try:
    heads = int(hf["num_attention_heads"])
    embed = int(hf["hidden_size"])
    return LlamaConfig(
        vocab_size=int(hf["vocab_size"]), embed_dim=embed, num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or embed // heads), mlp_dim=int(hf["intermediate_size"]),
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        context_length=int(hf.get("max_position_embeddings") or LlamaConfig.context_length))
  except KeyError as e:
    raise CheckpointError(f"{path}: config.json lacks the field {e.args[0]!r}") from None


def _safetensors_files(path: pathlib.Path) -> list[pathlib.Path]:
  index = path / "model.safetensors.index.json"
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return [path / s for s in shards]
  single = path / "model.safetensors"
  if single.is_file():
    return [single]
  raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json found")


def read_hf_params(path: str | pathlib.Path) -> tuple[LlamaConfig, dict]:
  """Reads config + float32 params (nested dict of NumPy arrays) from a HF Llama checkpoint folder."""
  from safetensors import safe_open

  path = pathlib.Path(path)
  config_file = path / "config.json"
  if not config_file.is_file():
    raise CheckpointError(f"{config_file} does not exist (expected a Hugging Face Llama checkpoint folder)")
  try:
    config = config_from_hf(json.loads(config_file.read_text()), config_file)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None

  params: dict[str, Any] = {}
  unknown = []
  for file in _safetensors_files(path):
    if not file.is_file():
      raise CheckpointError(f"{file} is listed in the index but does not exist")
    try:
      handle = safe_open(str(file), "np")
    except Exception as e:
      raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
    with handle as f:
      for name in f.keys():
        found = find_tensor(name, "hf")
        if found is not None:
          row, keys = found
          if keys[0] == "logits_dense" and config.tie_embeddings:
            continue  # Tied: the output projection is the embedding, which is read already.
          w = np.asarray(f.get_tensor(name), dtype=np.float32)
          set_leaf(params, keys, np.ascontiguousarray(w.T) if row.transpose else w)
        elif name.endswith("rotary_emb.inv_freq"):
          continue  # Recomputed from rope_theta.
        else:
          unknown.append(name)
  check_params(config, params, str(path), unexpected=unknown)
  return config, params


def load_hf_backbone(path: str | pathlib.Path, tokenizer: Any = None, name: str | None = None) -> LlamaBackbone:
  """A LlamaBackbone from a HF folder; the tokenizer comes from its tokenizer.json unless given."""
  import jax

  path = pathlib.Path(path)
  config, params = read_hf_params(path)
  if tokenizer is None and (path / "tokenizer.json").is_file():
    special = {}
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
      special = json.loads(tok_config.read_text())
    as_str = lambda t: t.get("content") if isinstance(t, dict) else t
    eos = as_str(special.get("eos_token")) or "<|endoftext|>"
    tokenizer = BpeTokenizer.from_tokenizer_json(path / "tokenizer.json", eos_token=eos,
                                                 pad_token=as_str(special.get("pad_token")),
                                                 bos_token=as_str(special.get("bos_token")))
  return LlamaBackbone(config, jax.tree.map(jax.numpy.asarray, params), tokenizer, name=name or path.name)
