"""The Llama backbone against Hugging Face transformers (random tiny models), and its own invariants."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from msp_jax.backbones import hf_llama, llama, llama_names
from msp_jax.errors import CheckpointError

VOCAB = 97


def _hf_model(tmp_path, *, tied: bool, seed: int) -> tuple[transformers.LlamaForCausalLM, str]:
  """A random GQA Llama (4 query heads on 2 KV heads) saved as safetensors; returns (model, folder)."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, rope_theta=5000.0,
                                    rms_norm_eps=1e-5, tie_word_embeddings=tied)
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():  # Non-trivial norms, so a swapped norm would show.
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1 + 0.3 * torch.randn_like(p))
  folder = tmp_path / ("tied" if tied else "untied")
  model.save_pretrained(folder)
  return model, str(folder)


def _hf_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  # Positions from the mask (as generate() does), so left padding is exactly the unpadded computation.
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.double().numpy()


@pytest.mark.parametrize("tied", [True, False])
def test_target_logits_match_transformers_with_left_padding(tmp_path, tied):
  model, folder = _hf_model(tmp_path, tied=tied, seed=1 + tied)
  backbone = hf_llama.load_hf_backbone(folder)
  assert backbone.config.tie_embeddings == tied
  rng = np.random.default_rng(int(tied))
  batch, in_len, tgt_len = 3, 6, 5
  ids = rng.integers(0, VOCAB, (batch, in_len + tgt_len))
  mask = np.ones_like(ids)
  mask[1, :2] = 0  # Left padding inside the inputs.
  mask[2, :5] = 0
  reference = _hf_logits(model, ids, mask)

  inputs = backbone.embed(backbone.params, jnp.asarray(ids[:, :in_len]))
  logits = jax.jit(backbone.target_logits)(backbone.params, inputs, jnp.asarray(mask[:, :in_len]),
                                          jnp.asarray(ids[:, in_len:]), jnp.ones((batch, tgt_len), jnp.int32))
  # Target t is predicted at HF position in_len - 1 + t; every such position is a real token here.
  expected = reference[:, in_len - 1:-1]
  scale = np.abs(expected).max()
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4 * scale)


def test_full_sequence_logits_match_transformers_on_real_positions(tmp_path):
  model, folder = _hf_model(tmp_path, tied=False, seed=7)
  backbone = hf_llama.load_hf_backbone(folder)
  rng = np.random.default_rng(7)
  ids = rng.integers(0, VOCAB, (2, 9))
  mask = np.ones_like(ids)
  mask[0, :4] = 0
  reference = _hf_logits(model, ids, mask)
  # One input token, the rest as targets: logits for every position after the first real token.
  inputs = backbone.embed(backbone.params, jnp.asarray(ids[:, :5]))
  logits = np.asarray(backbone.target_logits(backbone.params, inputs, jnp.asarray(mask[:, :5]),
                                             jnp.asarray(ids[:, 5:]), jnp.ones((2, 4))))
  for row in range(2):
    real = np.nonzero(mask[row, :5])[0]
    # Row 0 has one real input at index 4; its prediction of target 0 must equal HF's logits there.
    np.testing.assert_allclose(logits[row, 0], reference[row, real[-1]], rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())
    np.testing.assert_allclose(logits[row, 1:], reference[row, 5:8], rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())


def _random_backbone(seed: int = 0) -> llama.LlamaBackbone:
  config = llama.LLAMA_CONFIGS["tiny"]
  return llama.LlamaBackbone(config, llama.init_params(config, jax.random.key(seed)), tokenizer=None)


def test_padding_anywhere_gives_the_same_logits():
  backbone = _random_backbone(3)
  rng = np.random.default_rng(3)
  ids = rng.integers(0, 320, (1, 7))
  targets = jnp.asarray(rng.integers(0, 320, (1, 4)))
  params = backbone.params
  plain = backbone.target_logits(params, backbone.embed(params, jnp.asarray(ids)), jnp.ones((1, 7)), targets,
                                 jnp.ones((1, 4)))
  # Pads on the left, in the middle and on the right of the inputs, with junk token ids under them.
  padded_ids = np.concatenate([[[5, 6]], ids[:, :3], [[7]], ids[:, 3:], [[8, 9]]], axis=1)
  padded_mask = np.array([[0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0]])
  padded = backbone.target_logits(params, backbone.embed(params, jnp.asarray(padded_ids)),
                                  jnp.asarray(padded_mask), targets, jnp.ones((1, 4)))
  np.testing.assert_allclose(np.asarray(padded), np.asarray(plain), rtol=1e-5, atol=1e-5)


def test_cached_decoding_logits_equal_the_full_forward():
  backbone = _random_backbone(4)
  params = backbone.params
  rng = np.random.default_rng(4)
  ids = jnp.asarray(rng.integers(0, 320, (2, 10)))
  mask = jnp.asarray([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
  full = backbone.target_logits(params, backbone.embed(params, ids[:, :6]), mask, ids[:, 6:], jnp.ones((2, 4)))
  logits, cache = backbone.init_decode(params, backbone.embed(params, ids[:, :6]), mask, max_new_tokens=4)
  steps = [logits]
  step = jax.jit(backbone.decode_step)
  for t in range(6, 9):
    logits, cache = step(params, cache, ids[:, t])
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, axis=1), np.asarray(full), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_fused_layout_gives_the_same_logits_and_cached_decoding(tied):
  config = llama.LlamaConfig(**{**llama.LLAMA_CONFIGS["tiny"].__dict__, "tie_embeddings": tied})
  backbone = llama.LlamaBackbone(config, llama.init_params(config, jax.random.key(5)), tokenizer=None)
  plain = backbone.params
  fused = backbone.fused_params(plain)
  layer = fused["layers_1"]
  assert set(layer["attention"]) == {"qkv", "out"} and set(layer["mlp"]) == {"wi", "wo"}
  assert layer["attention"]["qkv"]["kernel"].shape == (32, (4 + 2 * 2) * 8)
  assert layer["mlp"]["wi"]["kernel"].shape == (32, 2 * 64)
  assert fused["logits_dense"]["kernel"].shape == (32, 320)
  np.testing.assert_array_equal(backbone.fused_params(fused)["layers_0"]["mlp"]["wi"]["kernel"],
                                fused["layers_0"]["mlp"]["wi"]["kernel"])  # Idempotent.

  rng = np.random.default_rng(5)
  ids = jnp.asarray(rng.integers(0, 320, (2, 10)))
  mask = jnp.asarray([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
  inputs = backbone.embed(plain, ids[:, :6])
  expected = np.asarray(backbone.target_logits(plain, inputs, mask, ids[:, 6:], jnp.ones((2, 4))))
  got = backbone.target_logits(fused, backbone.embed(fused, ids[:, :6]), mask, ids[:, 6:], jnp.ones((2, 4)))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  logits, cache = backbone.init_decode(fused, inputs, mask, max_new_tokens=4)
  steps = [logits]
  for t in range(6, 9):
    logits, cache = jax.jit(backbone.decode_step)(fused, cache, ids[:, t])
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, axis=1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blocks", [2, 3, 5])
def test_causal_attention_in_query_blocks_equals_one_block(blocks):
  rng = np.random.default_rng(blocks)
  batch, kv_heads, length, group, head_dim = 2, 2, 13, 3, 8
  q = jnp.asarray(rng.normal(size=(batch * kv_heads, length, group, head_dim)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(batch * kv_heads, length, head_dim)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(batch * kv_heads, length, head_dim)), jnp.float32)
  mask = np.ones((batch, length), bool)
  mask[1, :4] = False  # Left padding: those keys are masked for every query.
  attend = jnp.asarray(np.tril(np.ones((length, length), bool))[None] & mask[:, None, :])
  blocked = np.asarray(llama.attend_blocks(q, k, v, attend, blocks))
  whole = np.asarray(llama.attend_blocks(q, k.swapaxes(1, 2), v, attend, 1, keys_transposed=True))
  # Pad queries see no key at all (their outputs are never read); every real query must agree.
  real = np.repeat(mask, kv_heads, axis=0)  # [batch * kv_heads, length]
  np.testing.assert_allclose(blocked[real], whole[real], rtol=1e-5, atol=1e-6)


def test_long_inputs_match_transformers_through_blocked_attention(tmp_path):
  model, folder = _hf_model(tmp_path, tied=True, seed=3)
  backbone = hf_llama.load_hf_backbone(folder)
  rng = np.random.default_rng(3)
  in_len, tgt_len = 90, 30  # 120 positions: several causal blocks.
  assert llama.causal_blocks(in_len + tgt_len) > 1
  ids = rng.integers(0, VOCAB, (2, in_len + tgt_len))
  mask = np.ones_like(ids)
  mask[1, :7] = 0
  expected = _hf_logits(model, ids, mask)[:, in_len - 1:-1]
  inputs = backbone.embed(backbone.params, jnp.asarray(ids[:, :in_len]))
  logits = jax.jit(backbone.target_logits)(backbone.params, inputs, jnp.asarray(mask[:, :in_len]),
                                          jnp.asarray(ids[:, in_len:]), jnp.ones((2, tgt_len), jnp.int32))
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_param_tree_names_shapes_and_logical_axes():
  config = llama.LLAMA_CONFIGS["smollm2-135m"]
  shapes = llama.param_shapes(config)
  assert shapes["token_embedder/embedding"] == (49152, 576)
  assert shapes["layers_29/attention/query/kernel"] == (576, 576)
  assert shapes["layers_29/attention/key/kernel"] == (576, 192)
  assert shapes["layers_0/mlp/wo/kernel"] == (1536, 576)
  assert "logits_dense/kernel" not in shapes  # Tied embeddings.
  assert sum(np.prod(s) for s in shapes.values()) == 134_515_008  # SmolLM2-135M's published size.
  axes = llama.param_axes(config)
  assert axes["token_embedder"]["embedding"] == ("vocab", "embed")
  assert axes["layers_3"]["attention"]["out"]["kernel"] == ("joined_kv", "embed")
  assert axes["layers_3"]["mlp"]["wi_1"]["kernel"] == ("embed", "mlp")
  assert axes["final_norm"]["scale"] == ("embed",)


def test_name_table_reads_every_transformers_tensor_into_the_tree_the_model_expects():
  # 11 layers: two-digit layer numbers too.
  config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=11,
                                    num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
  hf_names = [n for n in transformers.LlamaForCausalLM(config).state_dict() if not n.endswith("inv_freq")]
  paths = {"/".join(llama_names.find_tensor(name, "hf")[1]) for name in hf_names}
  ours = llama.LlamaConfig(vocab_size=VOCAB, embed_dim=16, num_layers=11, num_heads=2, num_kv_heads=1,
                           head_dim=8, mlp_dim=24, tie_embeddings=False)
  assert paths == set(llama.param_shapes(ours))


def test_name_table_gguf_column_agrees_with_the_gguf_package():
  import gguf

  layers = int(np.random.default_rng().integers(1, 40))
  reference = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
  hf_names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
      f"model.layers.{layers - 1}.{suffix}" for suffix in (
          "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
          "mlp.up_proj.weight", "mlp.down_proj.weight")]
  for hf_name in hf_names:
    gguf_name = reference.get_name(hf_name, try_suffixes=(".weight",))
    assert llama_names.find_tensor(gguf_name, "gguf") == llama_names.find_tensor(hf_name, "hf"), hf_name


def test_name_table_knows_no_other_names():
  assert llama_names.find_tensor("model.layers.0.self_attn.rotary_emb.inv_freq", "hf") is None
  assert llama_names.find_tensor("blk.0.attn_q.bias", "gguf") is None
  assert llama_names.find_tensor("model.layers.0.self_attn.q_proj.weight", "gguf") is None


def test_config_from_params_recovers_the_config():
  config = llama.LlamaConfig(vocab_size=50, embed_dim=24, num_layers=3, num_heads=6, num_kv_heads=2, head_dim=4,
                             mlp_dim=40, tie_embeddings=False)
  params = llama.init_params(config, jax.random.key(0))
  assert llama.config_from_params(params, num_heads=6) == config


def test_missing_checkpoint_file_names_the_path(tmp_path):
  with pytest.raises(CheckpointError, match="config.json"):
    hf_llama.read_hf_params(tmp_path)


def test_shape_mismatch_names_the_offending_key(tmp_path):
  _, folder = _hf_model(tmp_path, tied=True, seed=0)
  config_file = os.path.join(folder, "config.json")
  config = json.load(open(config_file))
  config["intermediate_size"] = 96  # The safetensors hold 80.
  json.dump(config, open(config_file, "w"))
  with pytest.raises(CheckpointError,
                     match=r"shape mismatches: layers_0/mlp/wi_0/kernel expected \(48, 96\) got \(48, 80\)"):
    hf_llama.read_hf_params(folder)


def test_tensors_a_reader_found_no_place_for_are_named_before_the_shapes_are_checked():
  config = llama.LLAMA_CONFIGS["tiny"]
  with pytest.raises(CheckpointError, match=r"^m.gguf: unexpected tensors for a Llama model: "
                                            r"\['blk.0.attn_q.bias', 'x', 'y'\]$"):
    llama.check_params(config, {}, "m.gguf", unexpected=["blk.0.attn_q.bias", "x", "y", "z"])
  with pytest.raises(CheckpointError, match="m.gguf"):  # nothing unexpected: the (empty) tree is checked
    llama.check_params(config, {}, "m.gguf")
