"""Prompt training on a bfloat16 frozen backbone (`TrainConfig.backbone_dtype='bfloat16'`): what is stored in
bfloat16, that gradients still reach the prompts, and that SmolLM2 prompts train to float32's dev loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.backbones import gguf_checkpoint, load_backbone
from msp_jax.data import catalog, serialization
from msp_jax.errors import ConfigError
from msp_jax.tuning import training
from msp_jax.tuning.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.tuning.msp_model import MixtureConfig, MspModel


def test_only_the_matmul_kernels_are_stored_in_bfloat16():
  backbone = load_backbone("random:llama-tiny").backbone
  frozen = training.frozen_training_params(backbone, backbone.params, "bfloat16")
  assert jax.tree.structure(frozen) == jax.tree.structure(backbone.params)  # shards like the float32 tree
  for path, leaf in jax.tree_util.tree_leaves_with_path(frozen):
    name = jax.tree_util.keystr(path)
    expected = jnp.bfloat16 if name.endswith("['kernel']") else jnp.float32
    assert leaf.dtype == expected, name
  assert training.frozen_training_params(backbone, backbone.params, "float32") is backbone.params


def test_an_encoder_decoder_backbone_is_refused_in_one_line():
  backbone = load_backbone("random:t5-tiny").backbone
  with pytest.raises(ConfigError, match="backbone_dtype='bfloat16' is for Llama-family backbones") as e:
    training.frozen_training_params(backbone, backbone.params, "bfloat16")
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="backbone_dtype='float16': expected one of float32, bfloat16"):
    training.TrainConfig(backbone_dtype="float16")


def test_the_prompt_gradient_through_bfloat16_layers_matches_float32():
  """d(target NLL)/d(input embeddings) on a random Llama: bfloat16 matmuls in the forward and the backward
  pass give the float32 gradient up to bfloat16 rounding (fresh random inputs every run)."""
  backbone = load_backbone("random:llama-tiny").backbone
  rng = np.random.default_rng()
  batch, length, targets_len = 3, 7, 5
  embeds = jnp.asarray(rng.normal(size=(batch, length, backbone.embed_dim)), jnp.float32)
  mask = jnp.ones((batch, length), jnp.int32)
  targets = jnp.asarray(rng.integers(3, backbone.vocab_size, (batch, targets_len)), jnp.int32)
  targets_mask = jnp.ones((batch, targets_len), jnp.int32)

  def nll(x, params):
    logits = backbone.target_logits(params, x, mask, targets, targets_mask)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1).mean()

  frozen16 = training.frozen_training_params(backbone, backbone.params, "bfloat16")
  loss32, grad32 = jax.value_and_grad(nll)(embeds, backbone.params)
  loss16, grad16 = jax.value_and_grad(nll)(embeds, frozen16)
  assert abs(float(loss16) - float(loss32)) < 1e-2 * abs(float(loss32))
  g32, g16 = np.asarray(grad32, np.float64).ravel(), np.asarray(grad16, np.float64).ravel()
  cosine = g32 @ g16 / np.linalg.norm(g32) / np.linalg.norm(g16)
  assert cosine > 0.999, cosine
  assert np.linalg.norm(g16 - g32) < 0.05 * np.linalg.norm(g32)


def test_smollm2_prompts_reach_the_float32_dev_loss_in_bfloat16(tmp_path):
  """100 steps of the same prompts on the shipped front_desk domain against SmolLM2-135M, float32 and bfloat16
  backbone: the final dev losses agree within 2% relative."""
  backbone = gguf_checkpoint.load_gguf_backbone(gguf_checkpoint.smollm2_gguf_path())
  domain = catalog.load_task_data("front_desk")
  model = MspModel(backbone, domain.ontology, MixtureConfig(prefix_length=8, attribute_length=4,
                                                            max_attributes=6))
  tok = backbone.tokenizer
  common = dict(exemplar_pool=domain.splits["train"], ontology=domain.ontology,
                serialize=lambda e: serialization.serialize(e, domain.ontology.task), encode=tok.encode,
                eos_id=tok.eos_id, pad_id=tok.pad_id, batch_size=2,
                shapes=InputShapes(max_attributes=6, max_text_len=40, max_target_len=24))
  config = training.TrainConfig(steps=100, batch_size=2, learning_rate=0.1, eval_every=100, checkpoint_every=100)
  dev = fixed_batches(domain.splits["validation"][:8], **common)
  final = {}
  for dtype in ("float32", "bfloat16"):
    frozen = training.frozen_training_params(backbone, backbone.params, dtype)
    result = training.train(model, frozen, make_batch_fn(domain.splits["train"], seed=0, **common), dev,
                            config, tmp_path / dtype, {"backbone": "smollm2"}, show_progress=False)
    final[dtype] = result.history[-1]["dev_loss"]
    assert final[dtype] < 0.8 * result.first_dev_loss, (dtype, result.first_dev_loss, final[dtype])
  assert abs(final["bfloat16"] - final["float32"]) <= 0.02 * final["float32"], final
