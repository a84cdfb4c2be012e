"""The tensor names of a Llama checkpoint: our parameter path beside llama.cpp's GGUF name and Hugging Face's.

One row per tensor; `{i}` stands for the layer number. GGUF and Hugging Face both store matrices [out, in]
(PyTorch's order) and our kernels are [in, out], so those rows say `transpose`. Format-specific handling
stays with the readers: GGUF's permuted Q/K rows (`gguf_checkpoint`), a tied `lm_head` and the rotary
`inv_freq` buffer of Hugging Face (`hf_llama`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

CheckpointFormat = Literal["gguf", "hf"]


@dataclasses.dataclass(frozen=True)
class LlamaTensor:
  path: tuple[str, ...]  # in the `llama.py` parameter tree; the first key is 'layers_{i}' for per-layer tensors
  gguf: str
  hf: str
  transpose: bool        # a matrix stored [out, in]


LLAMA_TENSORS = (
    LlamaTensor(("token_embedder", "embedding"), "token_embd.weight", "model.embed_tokens.weight", False),
    LlamaTensor(("final_norm", "scale"), "output_norm.weight", "model.norm.weight", False),
    LlamaTensor(("logits_dense", "kernel"), "output.weight", "lm_head.weight", True),
    LlamaTensor(("layers_{i}", "attention_norm", "scale"), "blk.{i}.attn_norm.weight",
                "model.layers.{i}.input_layernorm.weight", False),
    LlamaTensor(("layers_{i}", "attention", "query", "kernel"), "blk.{i}.attn_q.weight",
                "model.layers.{i}.self_attn.q_proj.weight", True),
    LlamaTensor(("layers_{i}", "attention", "key", "kernel"), "blk.{i}.attn_k.weight",
                "model.layers.{i}.self_attn.k_proj.weight", True),
    LlamaTensor(("layers_{i}", "attention", "value", "kernel"), "blk.{i}.attn_v.weight",
                "model.layers.{i}.self_attn.v_proj.weight", True),
    LlamaTensor(("layers_{i}", "attention", "out", "kernel"), "blk.{i}.attn_output.weight",
                "model.layers.{i}.self_attn.o_proj.weight", True),
    LlamaTensor(("layers_{i}", "mlp_norm", "scale"), "blk.{i}.ffn_norm.weight",
                "model.layers.{i}.post_attention_layernorm.weight", False),
    LlamaTensor(("layers_{i}", "mlp", "wi_0", "kernel"), "blk.{i}.ffn_gate.weight",
                "model.layers.{i}.mlp.gate_proj.weight", True),
    LlamaTensor(("layers_{i}", "mlp", "wi_1", "kernel"), "blk.{i}.ffn_up.weight",
                "model.layers.{i}.mlp.up_proj.weight", True),
    LlamaTensor(("layers_{i}", "mlp", "wo", "kernel"), "blk.{i}.ffn_down.weight",
                "model.layers.{i}.mlp.down_proj.weight", True),
)

_BY_NAME = {fmt: {getattr(t, fmt): t for t in LLAMA_TENSORS} for fmt in ("gguf", "hf")}
_LAYER_NUMBER = re.compile(r"\.(\d+)\.")  # 'blk.12.attn_q.weight', 'model.layers.12.mlp...'


def find_tensor(name: str, fmt: CheckpointFormat) -> tuple[LlamaTensor, tuple[str, ...]] | None:
  """The row of checkpoint tensor `name` (a `fmt` name) and its path with the layer filled in; None if unknown."""
  tensor = _BY_NAME[fmt].get(name)
  if tensor is not None:
    return tensor, tensor.path
  layer = _LAYER_NUMBER.search(name)
  if layer is None:
    return None
  tensor = _BY_NAME[fmt].get(name[:layer.start()] + ".{i}." + name[layer.end():])
  if tensor is None:
    return None
  return tensor, tuple(key.format(i=int(layer.group(1))) for key in tensor.path)


def set_leaf(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  """tree[path[0]][path[1]]...[path[-1]] = value, creating the dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value
