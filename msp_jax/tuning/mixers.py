"""Mixers: the soft prompts of an example's attributes -> one prompt for the backbone (paper Sec. 3.2).

Every mixer maps a whole batch in one call (jit-friendly, static shapes):

  prompts [batch, n_attr, P, H], mask [batch, n_attr] (1 = real attribute), context [batch, H] or None
      -> (mixed [batch, P_mix, H], mixed_mask [batch, P_mix])

  concat      P_mix = n_attr * P: the real attributes' prompts packed first, padding masked out.
  pooling     P_mix = P: masked mean over the attribute axis.
  attention   P_mix = P: a learned query (plus a projection of `context`, the max-pooled input embedding)
              scores each attribute prompt; softmax over the *attribute* axis; weighted sum.
  bottleneck  as attention, but the keys come from a down-SiLU-up projection (hidden 300) of the prompts.
  cnn         attributes as channels, zero-padded to `max_attributes`; two 3x3 convolutions, ReLU between.

Padded attribute slots are replaced by zeros before any arithmetic (`jnp.where`, not a multiply), so whatever
they hold -- even inf or NaN -- changes neither the output nor the gradients. An example with no attribute
gets `mixed_mask` 0 everywhere, so the backbone never attends to its (meaningless) mixed prompt.

Not copied from the authors' code (docs/design.md, "What we do differently from the authors' code"): their
attention and bottleneck take the softmax over the hidden axis and then sum it out, which makes both a plain
sum with zero gradient for their parameters; their cnn pads missing attributes with ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.data.schema import Ontology
from msp_jax.errors import ConfigError

DEFAULT_MAX_ATTRIBUTES = 8


# ---------------------------------------------------------------------------------------------------------
# Host-side validation (shapes are static under jit, so counts are checked before the jitted call).
# ---------------------------------------------------------------------------------------------------------


def check_attribute_counts(mask: Any, max_attributes: int, names: Sequence[str] | None = None) -> None:
  """Raises ConfigError naming the first example whose real attributes (mask [batch, n_attr]) exceed the max."""
  counts = np.asarray(mask).astype(bool).sum(axis=-1).reshape(-1)
  over = np.flatnonzero(counts > max_attributes)
  if over.size:
    i = int(over[0])
    who = f"example {names[i]}" if names is not None else f"example #{i} of the batch"
    raise ConfigError(f"{who} has {int(counts[i])} attributes, more than the mixer maximum "
                      f"max_attributes={max_attributes}; raise max_attributes (or drop attributes)")


def _check_inputs(prompts: jax.Array, mask: jax.Array, max_attributes: int, mixer: str) -> None:
  """Trace-time checks of the static shapes."""
  if prompts.ndim != 4 or mask.shape != prompts.shape[:2]:
    raise ConfigError(f"{mixer} mixer expects prompts [batch, n_attr, P, H] and mask [batch, n_attr]; got "
                      f"prompts {tuple(prompts.shape)} and mask {tuple(mask.shape)}")
  if prompts.shape[1] > max_attributes:
    raise ConfigError(f"{mixer} mixer got {prompts.shape[1]} attribute slots, more than its maximum "
                      f"max_attributes={max_attributes}; raise max_attributes")


def _zero_padding(prompts: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """-> (prompts with padded slots set to exactly 0 [batch, n_attr, P, H], real [batch, n_attr] bool)."""
  real = mask.astype(bool)
  return jnp.where(real[:, :, None, None], prompts, jnp.zeros((), prompts.dtype)), real


def _any_real_mask(real: jax.Array, length: int, dtype: Any) -> jax.Array:
  """[batch, n_attr] -> [batch, length]: 1 where the example has at least one attribute."""
  return jnp.broadcast_to(jnp.any(real, axis=1, keepdims=True), (real.shape[0], length)).astype(dtype)


def masked_softmax(scores: jax.Array, real: jax.Array) -> jax.Array:
  """Softmax over the last (attribute) axis of scores [batch, n_attr] restricted to `real`; 0 elsewhere.

  A row with no real attribute gets all-zero weights. Both `where`s matter: the inner one keeps exp() of
  padded slots finite, so their zero cotangent cannot turn into 0 * inf = NaN in the gradient.
  """
  safe = jnp.where(real, scores, 0.0)
  top = jnp.max(jnp.where(real, safe, -jnp.inf), axis=-1, keepdims=True)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  unnorm = jnp.where(real, jnp.exp(jnp.where(real, safe - top, 0.0)), 0.0)
  return unnorm / jnp.maximum(jnp.sum(unnorm, axis=-1, keepdims=True), jnp.finfo(unnorm.dtype).tiny)


# ---------------------------------------------------------------------------------------------------------
# Mixers.
# ---------------------------------------------------------------------------------------------------------


class ConcatMixer(nn.Module):
  """[batch, n_attr, P, H] -> [batch, n_attr * P, H]: real attributes packed first (in slot order), then padding."""

  max_attributes: int = DEFAULT_MAX_ATTRIBUTES

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    del context  # Concatenation does not look at the input text.
    _check_inputs(prompts, mask, self.max_attributes, "concat")
    x, real = _zero_padding(prompts, mask)
    batch, n_attr, length, width = x.shape
    # A stable sort on "is padding" moves real slots to the front and keeps their order.
    order = jnp.argsort(jnp.logical_not(real), axis=1, stable=True)                 # [batch, n_attr]
    packed = jnp.take_along_axis(x, order[:, :, None, None], axis=1)                # [batch, n_attr, P, H]
    packed_real = jnp.take_along_axis(real, order, axis=1)                          # [batch, n_attr]
    mixed = packed.reshape(batch, n_attr * length, width)
    mixed_mask = jnp.repeat(packed_real, length, axis=1).astype(mask.dtype)         # [batch, n_attr * P]
    return mixed, mixed_mask


class PoolingMixer(nn.Module):
  """[batch, n_attr, P, H] -> [batch, P, H]: the mean of the real attributes' prompts."""

  max_attributes: int = DEFAULT_MAX_ATTRIBUTES

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    del context
    _check_inputs(prompts, mask, self.max_attributes, "pooling")
    x, real = _zero_padding(prompts, mask)
    count = jnp.maximum(jnp.sum(real, axis=1), 1).astype(jnp.float32)                # [batch]
    mixed = jnp.sum(x.astype(jnp.float32), axis=1) / count[:, None, None]           # [batch, P, H]
    return mixed.astype(prompts.dtype), _any_real_mask(real, x.shape[2], mask.dtype)


class ContextQuery(nn.Module):
  """The attention query [batch, H]: a learned vector plus a learned projection of the input summary.

  The projection starts at zero, so an untrained mixer scores with the learned vector alone and learns how
  much the input text should steer the mixture; without `context` only the learned vector is used.
  """

  query_init: nn.initializers.Initializer = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, batch: int, width: int, context: jax.Array | None) -> jax.Array:
    """context [batch, H] or None -> query [batch, H] (float32)."""
    query = self.param("vector", nn.with_logical_partitioning(self.query_init, ("prompt_embed",)), (width,),
                       jnp.float32)
    # Declared whether or not `context` is passed, so one param tree serves both call forms.
    projection = self.param("context_kernel",
                            nn.with_logical_partitioning(nn.initializers.zeros, ("prompt_embed", None)),
                            (width, width), jnp.float32)
    query = jnp.broadcast_to(query, (batch, width))
    if context is None:
      return query
    if context.shape != (batch, width):
      raise ConfigError(f"attention context must be [batch, H] = {(batch, width)}; got {tuple(context.shape)}")
    return query + context.astype(jnp.float32) @ projection


def _check_temperature(temperature: float, mixer: str) -> None:
  if not temperature > 0:
    raise ConfigError(f"{mixer} mixer temperature={temperature!r} must be > 0")


def attribute_attention(module: nn.Module, prompts: jax.Array, mask: jax.Array, context: jax.Array | None, *,
                        keys_from: Callable[[jax.Array], jax.Array], temperature: float, mixer: str
                        ) -> tuple[jax.Array, jax.Array]:
  """The scoring the attention and bottleneck mixers share; they differ only in `keys_from`.

  Each attribute prompt is summarised by its mean over the prompt axis [batch, n_attr, H] and `keys_from`
  turns the summaries into keys [batch, n_attr, H]. A `ContextQuery` (submodule "query" of `module`) gives the
  query from the max-pooled input embedding `context` [batch, H]. The weights are
  softmax(keys . query / (sqrt(H) * temperature)) over the *attribute* axis, with padded slots masked out, so
  they say how much of each attribute goes into the mix (docs/design.md, "Mixers"). They are sown as
  intermediates/attention_weights [batch, n_attr] for callers to inspect (`mutable=['intermediates']`).

  Must be called from inside `module`'s compact `__call__` (it creates the "query" submodule there).

  Returns (mixed [batch, P, H] in the prompts' dtype, mixed_mask [batch, P]).
  """
  _check_inputs(prompts, mask, module.max_attributes, mixer)
  _check_temperature(temperature, mixer)
  x, real = _zero_padding(prompts, mask)
  batch, _, length, width = x.shape
  keys = keys_from(jnp.mean(x.astype(jnp.float32), axis=2))                         # [batch, n_attr, H]
  query = ContextQuery(name="query")(batch, width, context)                         # [batch, H]
  scale = 1.0 / (np.sqrt(keys.shape[-1]) * temperature)
  scores = jnp.einsum("bah,bh->ba", keys, query) * scale                             # [batch, n_attr]
  weights = masked_softmax(scores, real)
  module.sow("intermediates", "attention_weights", weights)
  mixed = jnp.einsum("ba,baph->bph", weights, x.astype(jnp.float32))               # [batch, P, H]
  return mixed.astype(prompts.dtype), _any_real_mask(real, length, mask.dtype)


class AttentionMixer(nn.Module):
  """[batch, n_attr, P, H] -> [batch, P, H]: softmax(query . mean_P(prompt) / (sqrt(H) * T)) over attributes."""

  max_attributes: int = DEFAULT_MAX_ATTRIBUTES
  temperature: float = 1.0

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    return attribute_attention(self, prompts, mask, context, keys_from=lambda summary: summary,
                               temperature=self.temperature, mixer="attention")


class BottleneckMixer(nn.Module):
  """As `AttentionMixer`, with keys = up(SiLU(down(mean_P(prompt)))), down H -> hidden -> up H (no up bias)."""

  max_attributes: int = DEFAULT_MAX_ATTRIBUTES
  temperature: float = 1.0
  hidden_dim: int = 300

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    if self.hidden_dim < 1:
      raise ConfigError(f"bottleneck mixer hidden_dim={self.hidden_dim} must be >= 1")
    down = nn.Dense(self.hidden_dim, name="down", param_dtype=jnp.float32,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("prompt_embed", None)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))
    # No bias on `up`: a vector added to every key shifts all scores of an example equally, which the
    # softmax over attributes cancels -- a parameter with zero gradient forever.
    up = nn.Dense(prompts.shape[-1], name="up", use_bias=False, param_dtype=jnp.float32,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "prompt_embed")))
    return attribute_attention(self, prompts, mask, context, keys_from=lambda summary: up(nn.silu(down(summary))),
                               temperature=self.temperature, mixer="bottleneck")


class CnnMixer(nn.Module):
  """[batch, n_attr, P, H] -> [batch, P, H]: attribute slots as the channels of a P x H image.

  Slots are zero-padded up to `max_attributes` channels (the kernel's fixed input width); padded and masked
  slots are exactly zero, so an example's output does not depend on how many padding slots it has. ReLU sits
  between the two convolutions only: a ReLU on the output would make every prompt entry non-negative, which
  no embedding of the backbone is.
  """

  max_attributes: int = DEFAULT_MAX_ATTRIBUTES
  hidden_channels: int = 8

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    del context
    _check_inputs(prompts, mask, self.max_attributes, "cnn")
    if self.hidden_channels < 1:
      raise ConfigError(f"cnn mixer hidden_channels={self.hidden_channels} must be >= 1")
    x, real = _zero_padding(prompts, mask)
    n_attr, length = x.shape[1], x.shape[2]
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, self.max_attributes - n_attr), (0, 0), (0, 0)))
    image = jnp.transpose(x, (0, 2, 3, 1))                                            # [batch, P, H, max_attr]
    axes = (None, None, None, None)
    hidden = nn.Conv(self.hidden_channels, (3, 3), padding="SAME", name="conv_0", param_dtype=jnp.float32,
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(image)
    hidden = nn.relu(hidden)                                                          # [batch, P, H, hidden]
    out = nn.Conv(1, (3, 3), padding="SAME", name="conv_1", param_dtype=jnp.float32,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(hidden)
    return out[..., 0].astype(prompts.dtype), _any_real_mask(real, length, mask.dtype)


MIXERS: dict[str, type[nn.Module]] = {
    "concat": ConcatMixer,
    "pooling": PoolingMixer,
    "attention": AttentionMixer,
    "bottleneck": BottleneckMixer,
    "cnn": CnnMixer,
}


def mixer_options(name: str) -> tuple[str, ...]:
  """The keyword options `make_mixer(name, ...)` accepts."""
  cls = _mixer_class(name)
  return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def _mixer_class(name: str) -> type[nn.Module]:
  if name not in MIXERS:
    raise ConfigError(f"unknown mixer {name!r}; valid mixers: {', '.join(MIXERS)}")
  return MIXERS[name]


def make_mixer(name: str, **options: Any) -> nn.Module:
  """The mixer called `name` ('concat', 'pooling', 'attention', 'bottleneck', 'cnn') with `options`."""
  cls = _mixer_class(name)
  allowed = mixer_options(name)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ConfigError(f"mixer {name!r} has no option(s) {unknown}; its options: {', '.join(allowed)}")
  if options.get("max_attributes", 1) < 1:
    raise ConfigError(f"mixer {name!r}: max_attributes={options['max_attributes']} must be >= 1")
  return cls(**options)


# ---------------------------------------------------------------------------------------------------------
# Grouped mixing (TOPv2: intents and slots are mixed separately, then concatenated).
# ---------------------------------------------------------------------------------------------------------


class GroupedMixer(nn.Module):
  """Mixes each attribute group with its own mixer; concatenates the results along the prompt axis.

  `groups [batch, n_attr]` int gives each slot's group (index into `mixers`); group g's mixer sees the same
  prompts with the mask restricted to slots of group g. Output `[batch, sum_g P_mix_g, H]`.
  """

  mixers: Sequence[nn.Module]

  @nn.compact
  def __call__(self, prompts: jax.Array, mask: jax.Array, context: jax.Array | None = None,
               groups: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    if groups is None:
      raise ConfigError("a grouped mixer needs `groups` [batch, n_attr]: the group index of each attribute slot "
                        "(see group_index_by_kind)")
    if groups.shape != mask.shape:
      raise ConfigError(f"groups {tuple(groups.shape)} must have the mask's shape {tuple(mask.shape)}")
    outputs, masks = [], []
    for g, mixer in enumerate(self.mixers):
      in_group = jnp.logical_and(mask.astype(bool), groups == g).astype(mask.dtype)
      mixed, mixed_mask = mixer(prompts, in_group, context=context)
      outputs.append(mixed)
      masks.append(mixed_mask)
    return jnp.concatenate(outputs, axis=1), jnp.concatenate(masks, axis=1)


def make_grouped_mixer(names: Sequence[str], **options: Any) -> GroupedMixer:
  """One mixer per group (e.g. `('attention', 'attention')` for TOPv2 intents, slots), same options each."""
  if not names:
    raise ConfigError("a grouped mixer needs at least one mixer name")
  return GroupedMixer(mixers=tuple(make_mixer(n, **options) for n in names))


def group_index_by_kind(ontology: Ontology, kinds: Sequence[Sequence[str]]) -> np.ndarray:
  """[n_attributes] int32: the group of each ontology row, group g holding the attribute kinds `kinds[g]`.

  E.g. `kinds=(('intent',), ('slot',))` for TOPv2; `groups = table[attribute_ids]` gives a batch's groups.
  """
  lookup = {kind: g for g, group in enumerate(kinds) for kind in group}
  table = np.zeros([len(ontology.attributes)], np.int32)
  for row, attribute in enumerate(ontology.attributes):
    if attribute.kind not in lookup:
      raise ConfigError(f"ontology of domain {ontology.domain!r}: attribute {attribute.name!r} has kind "
                        f"{attribute.kind!r}, which no mixer group takes (groups: {[list(k) for k in kinds]})")
    table[row] = lookup[attribute.kind]
  return table
