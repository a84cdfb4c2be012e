"""Mixers: shapes, masking, order invariance, float64 references, live gradients, zero padding, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp_jax.tuning import mixers
from msp_jax.data.schema import Attribute, Ontology
from msp_jax.errors import ConfigError

BATCH, N_ATTR, LENGTH, WIDTH = 4, 4, 5, 8
MAX_ATTR = 6
# Padding sits anywhere: before, between and after real slots; one example has a single attribute.
MASK = np.array([[1, 0, 0, 0],
                 [1, 1, 1, 1],
                 [0, 1, 0, 1],
                 [1, 1, 0, 0]], np.int32)
ALL_MIXERS = tuple(mixers.MIXERS)
SCORED = ("attention", "bottleneck")


def _inputs(seed: int, mask: np.ndarray = MASK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  prompts = rng.normal(size=mask.shape + (LENGTH, WIDTH)).astype(np.float32)
  context = rng.normal(size=(mask.shape[0], WIDTH)).astype(np.float32)
  return prompts, mask, context


def _with_junk(prompts: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
  """Padded slots overwritten with huge values, inf and NaN."""
  rng = np.random.default_rng(seed)
  junk = (rng.normal(size=prompts.shape) * 1e6).astype(np.float32)
  junk.reshape(-1)[::7] = np.inf
  junk.reshape(-1)[3::11] = np.nan
  return np.where(mask[:, :, None, None].astype(bool), prompts, junk)


def _init(mixer: nn.Module, prompts, mask, context, seed: int = 0):
  return nn.unbox(mixer.init(jax.random.PRNGKey(seed), prompts, mask, context=context))


def _apply(mixer: nn.Module, variables, prompts, mask, context=None):
  """The whole batch in one jitted call; returns (mixed, mixed_mask, sown attention weights or None)."""

  @jax.jit
  def run(variables, prompts, mask, context):
    return mixer.apply(variables, prompts, mask, context=context, mutable=["intermediates"])

  (mixed, mixed_mask), state = run(variables, prompts, mask, context)
  weights = state.get("intermediates", {}).get("attention_weights")
  return np.asarray(mixed), np.asarray(mixed_mask), None if weights is None else np.asarray(weights[0])


def _make(name: str, **options) -> nn.Module:
  return mixers.make_mixer(name, max_attributes=MAX_ATTR, **options)


def _np_masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
  real = mask.astype(bool)
  shifted = np.where(real, scores, -np.inf)
  shifted = shifted - shifted.max(axis=-1, keepdims=True)
  e = np.where(real, np.exp(shifted), 0.0)
  return e / e.sum(axis=-1, keepdims=True)


# --- shapes and masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MIXERS)
def test_output_shapes(name):
  prompts, mask, context = _inputs(0)
  mixer = _make(name)
  mixed, mixed_mask, _ = _apply(mixer, _init(mixer, prompts, mask, context), prompts, mask, context)
  length = N_ATTR * LENGTH if name == "concat" else LENGTH
  assert mixed.shape == (BATCH, length, WIDTH) and mixed.dtype == np.float32
  assert mixed_mask.shape == (BATCH, length)


@pytest.mark.parametrize("name", ALL_MIXERS)
def test_padding_slots_change_nothing(name):
  prompts, mask, context = _inputs(1)
  mixer = _make(name)
  variables = _init(mixer, prompts, mask, context)
  clean = _apply(mixer, variables, prompts, mask, context)
  dirty = _apply(mixer, variables, _with_junk(prompts, mask, 2), mask, context)
  np.testing.assert_array_equal(dirty[0], clean[0])
  np.testing.assert_array_equal(dirty[1], clean[1])


@pytest.mark.parametrize("name", ALL_MIXERS)
def test_padding_slots_get_zero_gradient_even_when_junk(name):
  prompts, mask, context = _inputs(3)
  mixer = _make(name)
  variables = _init(mixer, prompts, mask, context)
  dirty = _with_junk(prompts, mask, 4)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(mixer.apply(variables, p, mask, context=context)[0] ** 2)))(dirty)
  grads = np.asarray(grads)
  assert np.all(np.isfinite(grads))
  assert np.all(grads[~mask.astype(bool)] == 0.0)
  assert np.any(grads[mask.astype(bool)] != 0.0)


@pytest.mark.parametrize("name", ALL_MIXERS)
def test_example_without_attributes_is_masked_out(name):
  mask = MASK.copy()
  mask[2] = 0
  prompts, mask, context = _inputs(5, mask)
  mixer = _make(name)
  mixed, mixed_mask, weights = _apply(mixer, _init(mixer, prompts, mask, context), prompts, mask, context)
  assert np.all(np.isfinite(mixed))
  assert np.all(mixed_mask[2] == 0) and np.all(mixed_mask[[0, 1, 3]].max(axis=1) == 1)
  if weights is not None:
    assert np.all(weights[2] == 0.0)


# --- references -------------------------------------------------------------------------------------------


def test_pooling_equals_float64_masked_mean():
  prompts, mask, context = _inputs(6)
  mixer = _make("pooling")
  mixed, mixed_mask, _ = _apply(mixer, {}, prompts, mask, context)
  p64 = prompts.astype(np.float64)
  expected = np.stack([p64[b, mask[b].astype(bool)].mean(axis=0) for b in range(BATCH)])
  np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(mixed_mask, np.ones([BATCH, LENGTH]))


def test_concat_packs_real_attributes_in_order():
  prompts, mask, context = _inputs(7)
  mixed, mixed_mask, _ = _apply(_make("concat"), {}, prompts, mask, context)
  for b in range(BATCH):
    real = [a for a in range(N_ATTR) if mask[b, a]]
    n = len(real) * LENGTH
    expected = np.concatenate([prompts[b, a] for a in real], axis=0)
    np.testing.assert_array_equal(mixed[b, :n], expected)
    np.testing.assert_array_equal(mixed[b, n:], 0.0)
    np.testing.assert_array_equal(mixed_mask[b], [1] * n + [0] * (N_ATTR * LENGTH - n))


def test_attention_matches_float64_reference_and_weights_sum_to_one():
  prompts, mask, context = _inputs(8)
  mixer = _make("attention", temperature=0.7)
  variables = _init(mixer, prompts, mask, context)
  # The context projection starts at zero; give it values so the reference checks how context is used.
  rng = np.random.default_rng(9)
  q = variables["params"]["query"]
  q["vector"] = jnp.asarray(rng.normal(size=WIDTH), jnp.float32)
  q["context_kernel"] = jnp.asarray(rng.normal(size=(WIDTH, WIDTH)) * 0.3, jnp.float32)
  mixed, _, weights = _apply(mixer, variables, prompts, mask, context)

  p64, c64 = prompts.astype(np.float64), context.astype(np.float64)
  query = np.asarray(q["vector"], np.float64) + c64 @ np.asarray(q["context_kernel"], np.float64)
  keys = p64.mean(axis=2)
  scores = np.einsum("bah,bh->ba", keys, query) / (np.sqrt(WIDTH) * 0.7)
  ref_weights = _np_masked_softmax(scores, mask)
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(weights[~mask.astype(bool)], 0.0)
  np.testing.assert_allclose(mixed, np.einsum("ba,baph->bph", ref_weights, p64), rtol=1e-5, atol=1e-5)


def test_bottleneck_matches_float64_reference():
  prompts, mask, context = _inputs(10)
  mixer = _make("bottleneck", temperature=1.3, hidden_dim=12)
  variables = _init(mixer, prompts, mask, context)
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
  mixed, _, weights = _apply(mixer, variables, prompts, mask, context)

  p64 = prompts.astype(np.float64)
  silu = lambda z: z / (1.0 + np.exp(-z))
  hidden = silu(p64.mean(axis=2) @ params["down"]["kernel"] + params["down"]["bias"])
  keys = hidden @ params["up"]["kernel"]
  query = params["query"]["vector"] + context.astype(np.float64) @ params["query"]["context_kernel"]
  scores = np.einsum("bah,bh->ba", keys, query) / (np.sqrt(WIDTH) * 1.3)
  ref_weights = _np_masked_softmax(scores, mask)
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed, np.einsum("ba,baph->bph", ref_weights, p64), rtol=1e-5, atol=1e-5)


def test_cnn_matches_float64_torch_convolution_with_zero_padded_channels():
  import torch  # Only this reference needs it.

  prompts, mask, context = _inputs(11)
  mixer = _make("cnn", hidden_channels=3)
  variables = _init(mixer, prompts, mask, context)
  mixed, _, _ = _apply(mixer, variables, prompts, mask, context)

  params = variables["params"]
  x = np.where(mask[:, :, None, None].astype(bool), prompts, 0.0).astype(np.float64)
  x = np.concatenate([x, np.zeros((BATCH, MAX_ATTR - N_ATTR, LENGTH, WIDTH))], axis=1)  # [B, C, P, H]
  t = lambda a: torch.from_numpy(np.asarray(a, np.float64))
  weight = lambda k: t(k).permute(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]
  hidden = torch.relu(torch.nn.functional.conv2d(t(x), weight(params["conv_0"]["kernel"]),
                                                 t(params["conv_0"]["bias"]), padding=1))
  out = torch.nn.functional.conv2d(hidden, weight(params["conv_1"]["kernel"]), t(params["conv_1"]["bias"]),
                                   padding=1)
  np.testing.assert_allclose(mixed, out[:, 0].numpy(), rtol=1e-5, atol=1e-5)


def test_cnn_pads_with_zeros_not_ones():
  # One attribute given alone (the mixer pads to MAX_ATTR itself) == the same attribute among junk slots.
  prompts, _, context = _inputs(12)
  one = np.array([[1], [1], [1], [1]], np.int32)
  mixer = _make("cnn")
  variables = _init(mixer, prompts[:, :1], one, context)
  alone = _apply(mixer, variables, prompts[:, :1], one, context)[0]
  mask = np.zeros([BATCH, N_ATTR], np.int32)
  mask[:, 0] = 1
  among_junk = _apply(mixer, variables, _with_junk(prompts, mask, 13), mask, context)[0]
  among_zeros = _apply(mixer, variables, np.where(mask[:, :, None, None] == 1, prompts, 0.0), mask, context)[0]
  np.testing.assert_array_equal(among_junk, alone)
  np.testing.assert_array_equal(among_zeros, alone)


@pytest.mark.parametrize("name", ("pooling", "attention", "bottleneck"))
def test_invariant_to_attribute_order(name):
  prompts, mask, context = _inputs(14)
  mixer = _make(name)
  variables = _init(mixer, prompts, mask, context)
  rng = np.random.default_rng(15)
  perm = np.stack([rng.permutation(N_ATTR) for _ in range(BATCH)])
  shuffled = np.take_along_axis(prompts, perm[:, :, None, None], axis=1)
  shuffled_mask = np.take_along_axis(mask, perm, axis=1)
  original = _apply(mixer, variables, prompts, mask, context)[0]
  permuted = _apply(mixer, variables, shuffled, shuffled_mask, context)[0]
  np.testing.assert_allclose(permuted, original, rtol=1e-5, atol=1e-6)


# --- the authors' bug: softmax over the hidden axis gave a plain sum and zero gradients ---------------------


def _loss_fn(mixer, prompts, mask, context, cotangent):
  def loss(params):
    return jnp.sum(mixer.apply({"params": params}, prompts, mask, context=context)[0] * cotangent)
  return jax.jit(jax.grad(loss))


@pytest.mark.parametrize("name", SCORED)
def test_scored_mixer_params_receive_nonzero_gradients(name):
  prompts, mask, context = _inputs(16)
  mixer = _make(name)
  params = _init(mixer, prompts, mask, context)["params"]
  cotangent = np.random.default_rng(17).normal(size=(BATCH, LENGTH, WIDTH)).astype(np.float32)
  grads = _loss_fn(mixer, prompts, mask, context, cotangent)(params)
  norms = {"/".join(str(k.key) for k in path): float(jnp.linalg.norm(g))
           for path, g in jax.tree_util.tree_leaves_with_path(grads)}
  assert norms and all(n > 1e-6 for n in norms.values()), norms


@pytest.mark.parametrize("name", SCORED)
def test_changing_scored_mixer_params_changes_the_output(name):
  prompts, mask, context = _inputs(18)
  mixer = _make(name)
  variables = _init(mixer, prompts, mask, context)
  before = _apply(mixer, variables, prompts, mask, context)[0]
  leaves, treedef = jax.tree.flatten(variables)
  rng = np.random.default_rng(19)
  for i, leaf in enumerate(leaves):
    moved = list(leaves)
    moved[i] = leaf + jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype)
    after = _apply(mixer, jax.tree.unflatten(treedef, moved), prompts, mask, context)[0]
    assert np.max(np.abs(after - before)) > 1e-3, f"parameter #{i} of {name} does not affect the output"


def test_attention_is_not_a_plain_sum_or_mean():
  # The authors' attention reduced to sum over attributes; ours weighs them by the query's scores.
  prompts, mask, context = _inputs(20)
  mixer = _make("attention", temperature=0.1)
  variables = _init(mixer, prompts, mask, context)
  variables["params"]["query"]["vector"] = jnp.asarray(np.random.default_rng(21).normal(size=WIDTH) * 3,
                                                       jnp.float32)
  mixed = _apply(mixer, variables, prompts, mask, context)[0]
  masked = np.where(mask[:, :, None, None] == 1, prompts, 0.0)
  row = 1  # Four real attributes.
  assert np.max(np.abs(mixed[row] - masked[row].sum(axis=0))) > 1e-2
  assert np.max(np.abs(mixed[row] - masked[row].mean(axis=0))) > 1e-2


# --- grouping (TOPv2) -------------------------------------------------------------------------------------


def test_grouped_mixer_mixes_each_group_separately_and_concatenates():
  prompts, mask, context = _inputs(22)
  groups = np.array([[0, 1, 0, 1]] * BATCH, np.int32)
  mixer = mixers.GroupedMixer(mixers=(mixers.PoolingMixer(max_attributes=MAX_ATTR),
                                      mixers.ConcatMixer(max_attributes=MAX_ATTR)))
  (mixed, mixed_mask) = jax.jit(lambda p, m, c, g: mixer.apply({}, p, m, context=c, groups=g))(
      prompts, mask, context, groups)
  mixed, mixed_mask = np.asarray(mixed), np.asarray(mixed_mask)
  assert mixed.shape == (BATCH, LENGTH + N_ATTR * LENGTH, WIDTH)
  p64 = prompts.astype(np.float64)
  for b in range(BATCH):
    first = [a for a in range(N_ATTR) if mask[b, a] and groups[b, a] == 0]
    second = [a for a in range(N_ATTR) if mask[b, a] and groups[b, a] == 1]
    pooled = p64[b, first].mean(axis=0) if first else np.zeros([LENGTH, WIDTH])
    np.testing.assert_allclose(mixed[b, :LENGTH], pooled, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mixed_mask[b, :LENGTH], int(bool(first)))
    n = len(second) * LENGTH
    packed = np.concatenate([prompts[b, a] for a in second], axis=0) if second else np.zeros([0, WIDTH])
    np.testing.assert_array_equal(mixed[b, LENGTH:LENGTH + n], packed)
    np.testing.assert_array_equal(mixed_mask[b, LENGTH:], [1] * n + [0] * (N_ATTR * LENGTH - n))


def test_group_index_by_kind_follows_ontology_rows():
  ontology = Ontology(domain="weather", task="semantic_parse", attributes=(
      Attribute("IN:GET_WEATHER", "intent", "get weather"), Attribute("SL:LOCATION", "slot", "location"),
      Attribute("IN:UNSUPPORTED", "intent", "unsupported")))
  table = mixers.group_index_by_kind(ontology, (("intent",), ("slot",)))
  np.testing.assert_array_equal(table, [0, 1, 0])


def test_grouped_mixer_without_groups_is_a_config_error():
  prompts, mask, context = _inputs(23)
  mixer = mixers.make_grouped_mixer(["pooling", "pooling"], max_attributes=MAX_ATTR)
  with pytest.raises(ConfigError, match="groups"):
    mixer.apply({}, prompts, mask, context=context)


# --- errors -----------------------------------------------------------------------------------------------


def test_unknown_mixer_name_lists_the_valid_names():
  with pytest.raises(ConfigError, match=r"unknown mixer 'sum'; valid mixers: concat, pooling, attention, "
                                        r"bottleneck, cnn"):
    mixers.make_mixer("sum")


def test_unknown_mixer_option_lists_the_options():
  with pytest.raises(ConfigError, match=r"mixer 'pooling' has no option\(s\) \['temperature'\].*max_attributes"):
    mixers.make_mixer("pooling", temperature=2.0)


def test_too_many_attributes_names_the_count_and_the_maximum():
  mask = np.zeros([3, 10], np.int32)
  mask[1, :7] = 1
  with pytest.raises(ConfigError, match=r"example b-2 has 7 attributes.*max_attributes=6"):
    mixers.check_attribute_counts(mask, 6, names=["a-1", "b-2", "c-3"])


def test_within_the_maximum_passes_validation():
  mixers.check_attribute_counts(MASK, 4)


def test_more_slots_than_the_maximum_fail_at_trace_time():
  prompts, mask, context = _inputs(24)
  mixer = mixers.make_mixer("cnn", max_attributes=3)
  with pytest.raises(ConfigError, match=r"cnn mixer got 4 attribute slots.*max_attributes=3"):
    mixer.init(jax.random.PRNGKey(0), prompts, mask, context=context)


def test_nonpositive_temperature_is_a_config_error():
  prompts, mask, context = _inputs(25)
  with pytest.raises(ConfigError, match=r"temperature=0"):
    _make("attention", temperature=0.0).init(jax.random.PRNGKey(0), prompts, mask, context=context)
