"""TOPv2 grouped mixing: intents and slots are mixed separately and the two mixed prompts concatenated."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from msp_jax.tuning import training
from msp_jax.backbones import load_backbone
from msp_jax.data.schema import Attribute, Ontology
from msp_jax.errors import ConfigError
from msp_jax.tuning.msp_model import MixtureConfig, MspModel, SoftPrompts, attribute_groups

# Kinds interleaved in row order, so grouping must follow the kind, not the position. Descriptions differ
# in their first bytes: the tiny backbones tokenize bytes and prompts start from the first LENGTH tokens.
TOPV2 = Ontology("weather", "semantic_parse", (
    Attribute("IN:GET_WEATHER", "intent", "weather forecast"),
    Attribute("SL:LOCATION", "slot", "location"),
    Attribute("IN:GET_SUNRISE", "intent", "sunrise time"),
    Attribute("SL:DATE_TIME", "slot", "date time"),
    Attribute("SL:WEATHER_ATTRIBUTE", "slot", "weather attribute"),
))
INTENT_ROWS, SLOT_ROWS = (0, 2), (1, 3, 4)
PREFIX, LENGTH, N_ATTR, WIDTH = 3, 4, 4, 8
# Example rows (ontology rows, then padding); padding ids point at real rows on purpose: the mask decides.
IDS = np.array([[0, 1, 3, 4],     # one intent, two slots, one padding slot
                [0, 3, 1, 1],     # intent only (padding points at slot rows)
                [2, 0, 4, 1],     # two intents, two slots
                [1, 0, 0, 0]], np.int32)  # a lone slot
MASK = np.array([[1, 1, 1, 0],
                 [1, 0, 0, 0],
                 [1, 1, 1, 1],
                 [1, 0, 0, 0]], np.int32)


def _soft_prompts(mixer: str, grouping: str = "auto") -> tuple[SoftPrompts, dict]:
  config = MixtureConfig(mixer=mixer, prefix_length=PREFIX, attribute_length=LENGTH, max_attributes=N_ATTR,
                         grouping=grouping)
  module = SoftPrompts(num_attributes=len(TOPV2.attributes), embed_dim=WIDTH, config=config,
                       attribute_groups=attribute_groups(TOPV2, config))
  context = np.zeros((IDS.shape[0], WIDTH), np.float32)
  params = jax.tree.map(np.asarray, nn.unbox(module.init(jax.random.PRNGKey(0), IDS, MASK, context)))
  return module, params


def _mix(module: SoftPrompts, params, ids=IDS, mask=MASK):
  context = np.random.default_rng(1).normal(size=(ids.shape[0], WIDTH)).astype(np.float32)
  prompt, prompt_mask = jax.jit(module.apply)(params, ids, mask, context)
  return np.asarray(prompt), np.asarray(prompt_mask)


def test_topv2_groups_intents_then_slots_by_default():
  assert attribute_groups(TOPV2, MixtureConfig()) == (0, 1, 0, 1, 1)
  assert attribute_groups(TOPV2, MixtureConfig(grouping="none")) is None
  nlu = Ontology("hotels", "multi_intent", (Attribute("book", "intent", "book"), Attribute("date", "slot", "date")))
  assert attribute_groups(nlu, MixtureConfig()) is None          # 'auto' groups only TOPv2
  assert attribute_groups(nlu, MixtureConfig(grouping="kind")) == (0, 1)


def test_unknown_grouping_is_a_config_error():
  with pytest.raises(ConfigError, match=r"MixtureConfig.grouping='by_kind' must be one of auto, kind, none"):
    MixtureConfig(grouping="by_kind")


@pytest.mark.parametrize("mixer,mixed_length", [("pooling", 2 * LENGTH), ("attention", 2 * LENGTH),
                                                ("concat", 2 * N_ATTR * LENGTH)])
def test_grouped_prompt_shapes(mixer, mixed_length):
  module, params = _soft_prompts(mixer)
  prompt, prompt_mask = _mix(module, params)
  assert prompt.shape == (IDS.shape[0], PREFIX + mixed_length, WIDTH)
  assert prompt_mask.shape == (IDS.shape[0], PREFIX + mixed_length)
  if mixer == "attention":  # one mixer (its own weights) per group
    assert set(params["params"]["mixer"]) == {"mixers_0", "mixers_1"}


def test_each_half_is_the_mean_of_its_groups_prompts_and_masked_when_empty():
  module, params = _soft_prompts("pooling")
  prompt, prompt_mask = _mix(module, params)
  table = params["params"]["table"]["prompt"].astype(np.float64)       # [n_attributes, P, H]
  for b in range(IDS.shape[0]):
    rows = IDS[b, MASK[b] == 1]
    intents = [r for r in rows if r in INTENT_ROWS]
    slots = [r for r in rows if r in SLOT_ROWS]
    np.testing.assert_array_equal(prompt_mask[b, :PREFIX], 1)
    np.testing.assert_array_equal(prompt_mask[b, PREFIX:PREFIX + LENGTH], int(bool(intents)))
    np.testing.assert_array_equal(prompt_mask[b, PREFIX + LENGTH:], int(bool(slots)))
    for rows_of_group, half in ((intents, slice(PREFIX, PREFIX + LENGTH)), (slots, slice(PREFIX + LENGTH, None))):
      want = table[rows_of_group].mean(axis=0) if rows_of_group else np.zeros([LENGTH, WIDTH])
      np.testing.assert_allclose(prompt[b, half], want, rtol=1e-6, atol=1e-6)


def test_the_group_split_changes_the_mixed_prompt_only_when_both_kinds_are_present():
  grouped, params = _soft_prompts("pooling", "kind")
  plain, plain_params = _soft_prompts("pooling", "none")
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, plain_params)  # pooling has no weights
  prompt, _ = _mix(grouped, params)
  flat, _ = _mix(plain, params)                                       # same prompt table, one mixer
  mixed = prompt[:, PREFIX:]
  for b in (0, 2):  # intents and slots: neither half is the mean over all attributes
    assert np.max(np.abs(mixed[b, :LENGTH] - flat[b, PREFIX:])) > 1e-3
    assert np.max(np.abs(mixed[b, LENGTH:] - flat[b, PREFIX:])) > 1e-3
  # One kind only: its half is exactly the ungrouped mixture (same attribute set, same mean).
  np.testing.assert_allclose(mixed[1, :LENGTH], flat[1, PREFIX:], rtol=1e-6)
  np.testing.assert_allclose(mixed[3, LENGTH:], flat[3, PREFIX:], rtol=1e-6)


def test_gradients_reach_both_groups_prompts_and_mixers():
  backbone = load_backbone("random:llama-tiny").backbone
  config = MixtureConfig(mixer="attention", prefix_length=PREFIX, attribute_length=LENGTH, max_attributes=N_ATTR)
  model = MspModel(backbone, TOPV2, config)
  soft = model.init(jax.random.PRNGKey(0), backbone.params)
  rng = np.random.default_rng(2)
  batch = {"attribute_ids": IDS[2:3].repeat(2, 0), "attribute_mask": MASK[2:3].repeat(2, 0),
           "text_ids": rng.integers(3, 200, size=(2, 6)).astype(np.int32), "text_mask": np.ones((2, 6), np.int32),
           "targets": rng.integers(3, 200, size=(2, 5)).astype(np.int32), "targets_mask": np.ones((2, 5), np.int32)}
  grads = jax.grad(lambda p: training.loss_fn(p, backbone.params, batch, model)[0])(soft)
  table = np.asarray(grads["table"]["prompt"])                         # [n_attributes, P, H]
  used = set(IDS[2].tolist())
  for row in range(len(TOPV2.attributes)):
    norm = np.abs(table[row]).max()
    assert (norm > 0) == (row in used), (TOPV2.attributes[row].name, norm)
  for group in ("mixers_0", "mixers_1"):
    # Two attributes per group, so the softmax over attributes is not constant and the query learns.
    assert np.abs(np.asarray(grads["mixer"][group]["query"]["vector"])).max() > 0, group
    assert np.abs(np.asarray(grads["mixer"][group]["query"]["context_kernel"])).max() > 0, group
