"""GGUF reading: tiny files written here with `gguf.GGUFWriter`, and the real SmolLM2-135M vs transformers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from msp_jax.synthesis import decoding
from msp_jax.backbones import gguf_checkpoint
from msp_jax.backbones.bpe_tokenizer import chat_prompt
from msp_jax.errors import CheckpointError

VOCAB, EMBED, HEADS, KV_HEADS, MLP, LAYERS = 61, 32, 4, 2, 48, 2


def _tiny_hf_model(seed: int = 0) -> transformers.LlamaForCausalLM:
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=EMBED, intermediate_size=MLP,
                                    num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                    num_key_value_heads=KV_HEADS, rope_theta=10000.0, rms_norm_eps=1e-5,
                                    tie_word_embeddings=False)
  return transformers.LlamaForCausalLM(config).eval()


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's convert_hf_to_gguf row order for Q/K, written out independently of the reader."""
  out_dim = w.shape[0]
  head_dim = out_dim // heads
  rows = [h * head_dim + half * head_dim // 2 + i for h in range(heads) for i in range(head_dim // 2)
          for half in range(2)]
  return w[rows]


def _write_gguf(path, model, *, arch: str = "llama", embed_meta: int = EMBED,
                q_type: gguf.GGMLQuantizationType | None = None) -> None:
  """Writes `model` as llama.cpp would (HF names mapped, Q/K rows permuted), optionally quantising attn_q."""
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(LAYERS)
  writer.add_embedding_length(embed_meta)
  writer.add_feed_forward_length(MLP)
  writer.add_head_count(HEADS)
  writer.add_head_count_kv(KV_HEADS)
  writer.add_rope_freq_base(10000.0)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_vocab_size(VOCAB)
  sd = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
  writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
  writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
  writer.add_tensor("output.weight", sd["lm_head.weight"])
  names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
           "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
           "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
  for i in range(LAYERS):
    for hf_name, gguf_name in names.items():
      w = sd[f"model.layers.{i}.{hf_name}.weight"]
      if gguf_name == "attn_q":
        w = _llama_cpp_permute(w, HEADS)
      elif gguf_name == "attn_k":
        w = _llama_cpp_permute(w, KV_HEADS)
      if gguf_name == "attn_q" and q_type is not None:
        q = gguf.quants.quantize(w, q_type)
        writer.add_tensor(f"blk.{i}.{gguf_name}.weight", q, raw_shape=q.shape, raw_dtype=q_type)
      else:
        writer.add_tensor(f"blk.{i}.{gguf_name}.weight", w)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_tiny_gguf_logits_match_transformers(tmp_path):
  model = _tiny_hf_model()
  _write_gguf(tmp_path / "tiny.gguf", model)
  config, params = gguf_checkpoint.read_gguf_params(tmp_path / "tiny.gguf")
  assert (config.num_heads, config.num_kv_heads, config.head_dim, config.tie_embeddings) == (4, 2, 8, False)
  from msp_jax.backbones.llama import LlamaBackbone
  backbone = LlamaBackbone(config, jax.tree.map(jnp.asarray, params), tokenizer=None)
  ids = np.random.default_rng(0).integers(0, VOCAB, (2, 9))
  with torch.no_grad():
    expected = model(torch.tensor(ids)).logits.numpy()
  inputs = backbone.embed(backbone.params, jnp.asarray(ids[:, :1]))
  logits = backbone.target_logits(backbone.params, inputs, jnp.ones((2, 1)), jnp.asarray(ids[:, 1:]),
                                  jnp.ones((2, 8)))
  np.testing.assert_allclose(np.asarray(logits), expected[:, :-1], rtol=1e-4, atol=1e-5)


def test_quantised_tensors_are_dequantised_and_unpermuted(tmp_path):
  model = _tiny_hf_model(1)
  _write_gguf(tmp_path / "q.gguf", model, q_type=gguf.GGMLQuantizationType.Q8_0)
  _, params = gguf_checkpoint.read_gguf_params(tmp_path / "q.gguf")
  original = model.state_dict()["model.layers.1.self_attn.q_proj.weight"].numpy().T
  got = params["layers_1"]["attention"]["query"]["kernel"]
  # Q8_0: 32 values share one scale max|w|/127, so the error is at most half a step per block.
  step = np.abs(original).max() / 127
  assert np.abs(got - original).max() <= 0.5 * step + 1e-7
  assert np.abs(got - original).max() > 0  # It really went through the quantiser.


def test_missing_file_is_a_checkpoint_error(tmp_path):
  with pytest.raises(CheckpointError, match="nothere.gguf does not exist"):
    gguf_checkpoint.read_gguf_params(tmp_path / "nothere.gguf")


def test_truncated_file_is_a_checkpoint_error(tmp_path):
  _write_gguf(tmp_path / "full.gguf", _tiny_hf_model())
  data = (tmp_path / "full.gguf").read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="cut.gguf: not a readable GGUF file"):
    gguf_checkpoint.read_gguf_params(tmp_path / "cut.gguf")


def test_other_architecture_is_rejected(tmp_path):
  _write_gguf(tmp_path / "gpt2.gguf", _tiny_hf_model(), arch="gpt2")
  with pytest.raises(CheckpointError, match="general.architecture is 'gpt2'"):
    gguf_checkpoint.read_gguf_params(tmp_path / "gpt2.gguf")


def test_shape_mismatch_names_the_first_keys(tmp_path):
  _write_gguf(tmp_path / "bad.gguf", _tiny_hf_model(), embed_meta=40)
  with pytest.raises(CheckpointError, match=r"bad.gguf: .*final_norm/scale expected \(40,\) got \(32,\)"):
    gguf_checkpoint.read_gguf_params(tmp_path / "bad.gguf")


# --- The real model: SmolLM2-135M-Instruct (Q4_1) against transformers reading the same file. ---------------

@pytest.fixture(scope="module")
def smollm2():
  path = gguf_checkpoint.smollm2_gguf_path()
  ours = gguf_checkpoint.load_gguf_backbone(path)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()
  return ours, theirs


@pytest.mark.slow
def test_smollm2_config_is_read_from_metadata(smollm2):
  ours, _ = smollm2
  c = ours.config
  assert (c.num_layers, c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim, c.vocab_size) == (
      30, 576, 9, 3, 64, 1536, 49152)
  assert (c.rope_base, c.tie_embeddings) == (1e5, True)


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
  ours, theirs = smollm2
  prompts = [chat_prompt("What is the capital of France?"), "The quick brown fox jumps over the lazy dog. 12345",
             "Ünïcödé text: naïve café — 東京"]
  forward = jax.jit(ours.target_logits)
  for text in prompts:
    ids = ours.tokenizer.encode(text)
    with torch.no_grad():
      expected = theirs(torch.tensor([ids])).logits.double().numpy()[0, 3:-1]
    inputs = ours.embed(ours.params, jnp.asarray([ids[:4]]))
    logits = np.asarray(forward(ours.params, inputs, jnp.ones((1, 4)), jnp.asarray([ids[4:]]),
                                jnp.ones((1, len(ids) - 4))))[0]
    # Both dequantise the same Q4_1 file to the same float32 weights; what is left is float32 summation order
    # through 30 layers. Logits span about +-40 here, so 2e-5 of the largest logit (~1e-3 absolute) is far
    # below any difference in behaviour while catching any wrong weight or layout (which moves logits by O(1)).
    scale = np.abs(expected).max()
    assert np.abs(logits - expected).max() <= 2e-5 * scale + 1e-4, (text, np.abs(logits - expected).max(), scale)


@pytest.mark.slow
def test_smollm2_greedy_chat_continuation_matches_transformers(smollm2):
  ours, theirs = smollm2
  ids = ours.tokenizer.encode(chat_prompt("Give me three tips for staying healthy."))
  with torch.no_grad():
    expected = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=16, do_sample=False, pad_token_id=2)[0, len(ids):].numpy()
  embeds = ours.embed(ours.params, jnp.asarray([ids]))
  tokens, _ = decoding.sample(ours, ours.params, embeds, jnp.ones((1, len(ids))), jax.random.key(0),
                              max_new_tokens=16, greedy=True)
  np.testing.assert_array_equal(np.asarray(tokens)[0, :len(expected)], expected)
  assert len(ours.tokenizer.decode(expected).split()) >= 8  # Fluent English, not a degenerate loop.
