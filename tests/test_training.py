"""Prompt training on a tiny random backbone: frozen backbone, soft-only optimizer state, loss falls, resume."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from msp_jax.tuning import losses, training
from msp_jax.backbones import load_backbone
from msp_jax.data.schema import Attribute, Example, Ontology
from msp_jax.tuning.model_inputs import InputShapes, fixed_batches, make_batch_fn
from msp_jax.tuning.msp_model import MixtureConfig, MspModel

ONTOLOGY = Ontology("toy", "multi_intent", (Attribute("greet", "intent", "say hello"),
                                           Attribute("bye", "intent", "say goodbye")))
TEXTS = {"greet": "hello there friend", "bye": "goodbye see you soon"}


def corpus(n: int) -> list[Example]:
  return [Example(uid=f"e{i}", domain="toy", text=TEXTS[name], intents=(name,))
          for i, name in enumerate(["greet", "bye"] * (n // 2))]


def setup(mixer: str = "pooling"):
  backbone = load_backbone("random:t5-tiny").backbone
  model = MspModel(backbone, ONTOLOGY, MixtureConfig(mixer=mixer, prefix_length=4, attribute_length=4,
                                                     max_attributes=2))
  shapes = InputShapes(max_attributes=2, max_text_len=16, max_target_len=24)
  tok = backbone.tokenizer
  # The template text is empty-ish here, so only the attribute prompts can tell the two targets apart.
  common = dict(exemplar_pool=[], ontology=ONTOLOGY, serialize=lambda e: e.text, encode=tok.encode,
                eos_id=tok.eos_id, pad_id=tok.pad_id, shapes=shapes, batch_size=4)
  return backbone, model, common


def test_backbone_frozen_and_optimizer_holds_only_soft_params(tmp_path):
  backbone, model, common = setup()
  before = jax.tree.map(np.array, backbone.params)
  config = training.TrainConfig(steps=3, batch_size=4, learning_rate=0.1, eval_every=3, checkpoint_every=3)
  result = training.train(model, backbone.params, make_batch_fn(corpus(8), seed=0, **common),
                          fixed_batches(corpus(4), **common), config, tmp_path, {"backbone": "random"},
                          show_progress=False)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, backbone.params))
  soft_shapes = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(
      result.state["params"])}
  backbone_sizes = {np.size(x) for x in jax.tree.leaves(backbone.params)}
  for leaf in jax.tree.leaves(result.state["opt_state"]):
    assert np.ndim(leaf) == 0 or np.shape(leaf) in soft_shapes.values()
  assert max(np.size(x) for x in jax.tree.leaves(result.state["opt_state"])) < max(backbone_sizes)


def test_training_lowers_the_loss(tmp_path):
  backbone, model, common = setup("attention")
  config = training.TrainConfig(steps=200, batch_size=4, learning_rate=0.3, eval_every=200,
                                checkpoint_every=200, log_every=10)
  result = training.train(model, backbone.params, make_batch_fn(corpus(8), seed=0, **common),
                          fixed_batches(corpus(4), **common), config, tmp_path, {"backbone": "random"},
                          show_progress=False)
  assert result.best_dev_loss < 0.85 * result.first_dev_loss, (result.first_dev_loss, result.best_dev_loss)


def test_resume_is_bit_identical(tmp_path):
  backbone, model, common = setup()
  config = training.TrainConfig(steps=8, batch_size=4, checkpoint_every=4, eval_every=100)
  args = (model, backbone.params, make_batch_fn(corpus(8), seed=1, **common), [], config)
  straight = training.train(*args, tmp_path / "a", {"backbone": "random"}, show_progress=False)
  training.train(*args, tmp_path / "b", {"backbone": "random"}, show_progress=False, stop_after=4)
  resumed = training.train(*args, tmp_path / "b", {"backbone": "random"}, show_progress=False)
  assert resumed.resumed_from == 4
  jax.tree.map(np.testing.assert_array_equal, straight.state["params"], resumed.state["params"])


def test_restoring_against_another_backbone_is_refused(tmp_path):
  from msp_jax.errors import CheckpointError

  backbone, model, common = setup()
  config = training.TrainConfig(steps=2, batch_size=4, checkpoint_every=1, eval_every=100)
  args = (model, backbone.params, make_batch_fn(corpus(8), seed=1, **common), [], config, tmp_path)
  training.train(*args, {"backbone": "random"}, show_progress=False, stop_after=1)
  with pytest.raises(CheckpointError, match="backbone="):
    training.train(*args, {"backbone": "other"}, show_progress=False)


def test_target_nll_matches_a_float64_reference():
  rng = np.random.default_rng()
  batch, length, vocab = 3, 7, 11
  logits = rng.normal(scale=3.0, size=(batch, length, vocab)).astype(np.float32)
  targets = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
  mask = (rng.random((batch, length)) < 0.7).astype(np.int32)
  mask[0] = 0  # a row with nothing to score
  nll, tokens = losses.target_nll(logits, targets, mask)
  wide = logits.astype(np.float64)
  log_probs = wide - np.log(np.exp(wide - wide.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - wide.max(-1, keepdims=True)
  expected = np.array([-sum(log_probs[b, t, targets[b, t]] for t in range(length) if mask[b, t])
                       for b in range(batch)])
  np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(tokens), mask.sum(-1))
