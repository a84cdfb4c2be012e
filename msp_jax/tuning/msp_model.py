"""The trainable half of MSP: instruction prefix + attribute prompt table + mixer, bound to a frozen backbone.

`MspModel.inputs` turns a `PromptBatch` into the backbone's input embeddings:

  [prefix P0][mixed attribute prompt P_mix][embedded template text L]  -> inputs_embeds [batch, P0+P_mix+L, H]

with the mask carrying the mixer's padding (concat of fewer attributes than the maximum) and the text's.
For TOPv2 (`MixtureConfig.grouping`, as the authors do) intents and slots have a mixer each and P_mix is the
intents' mixed prompt followed by the slots'; a group the example has no attribute of is masked out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.tuning import mixers, prompts
from msp_jax.backbones.base import Backbone
from msp_jax.data.schema import Ontology
from msp_jax.errors import ConfigError

INSTRUCTION = "Show me three distinct utterances that all express the"


GROUPINGS = ("auto", "kind", "none")
# `MixtureConfig.mixer` of a model without attribute prompts: the instruction prefix is the whole soft prompt (the
# paper's prompt-tuning baseline, and with an untrained prefix of the instruction's own tokens, its in-context one).
NO_ATTRIBUTE_PROMPTS = "none"
# Attribute kinds in the order their groups' mixed prompts are concatenated (grouping 'kind').
KIND_ORDER = ("intent", "slot", "entity")


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
  """Soft prompt sizes and the mixer. Paper: prefix 100 tokens, 20 per attribute.

  `mixer='none'` (`NO_ATTRIBUTE_PROMPTS`) leaves the attribute prompts and the mixer out: the soft prompt is the
  prefix alone, one prompt for the whole domain (the attributes are still named in the template's text).

  `grouping` says which attributes are mixed together (paper: TOPv2 mixes intents and slots separately and
  concatenates the two mixed prompts):
    'auto'  by kind for a semantic_parse (TOPv2) ontology, all together otherwise;
    'kind'  always by kind: one mixer per attribute kind present (intent, slot, entity, in that order);
    'none'  one mixer over all attributes.
  """

  mixer: str = "attention"
  prefix_length: int = 100
  attribute_length: int = 20
  max_attributes: int = 8
  init: str = "description"      # 'description' (embeddings of its tokens) or 'vocab' (sampled rows)
  mixer_options: tuple[tuple[str, Any], ...] = ()
  grouping: str = "auto"

  def __post_init__(self):
    if self.prefix_length < 1:
      raise ConfigError(f"MixtureConfig.prefix_length={self.prefix_length}: the instruction prefix needs at "
                        "least 1 soft token (paper: 100)")
    if self.attribute_length < 1:
      raise ConfigError(f"MixtureConfig.attribute_length={self.attribute_length}: an attribute prompt needs "
                        "at least 1 soft token (paper: 20)")
    if self.max_attributes < 1:
      raise ConfigError(f"MixtureConfig.max_attributes={self.max_attributes} must be >= 1")
    if self.init not in ("description", "vocab"):
      raise ConfigError(f"MixtureConfig.init={self.init!r} must be 'description' or 'vocab'")
    if self.grouping not in GROUPINGS:
      raise ConfigError(f"MixtureConfig.grouping={self.grouping!r} must be one of {', '.join(GROUPINGS)}")
    # An unknown mixer or option fails here, before any data or backbone is loaded.
    if self.mixer == NO_ATTRIBUTE_PROMPTS:
      return
    try:
      mixers.make_mixer(self.mixer, max_attributes=self.max_attributes, **dict(self.mixer_options))
    except ConfigError as e:
      raise ConfigError(f"MixtureConfig: {e}") from None


def attribute_groups(ontology: Ontology, config: MixtureConfig) -> tuple[int, ...] | None:
  """The mixer group of each ontology row [n_attributes] (None: one mixer over all attributes, or none)."""
  grouping = config.grouping
  if config.mixer == NO_ATTRIBUTE_PROMPTS:
    return None
  if grouping == "auto":
    grouping = "kind" if ontology.task == "semantic_parse" else "none"
  if grouping == "none":
    return None
  present = {a.kind for a in ontology.attributes}
  kinds = [kind for kind in KIND_ORDER if kind in present] + sorted(present - set(KIND_ORDER))
  return tuple(int(g) for g in mixers.group_index_by_kind(ontology, [(kind,) for kind in kinds]))


class SoftPrompts(nn.Module):
  """prefix [P0, H] + attribute table [n_attr, P, H] + mixer -> prompt [batch, P0 + P_mix, H] and mask.

  With `attribute_groups` (the group of each table row, see `attribute_groups`) each group has its own
  mixer and P_mix is the sum of the groups' mixed lengths, group 0 first.
  """

  num_attributes: int
  embed_dim: int
  config: MixtureConfig
  attribute_groups: tuple[int, ...] | None = None

  def setup(self):
    cfg = self.config
    self.prefix = prompts.InstructionPrefix(length=cfg.prefix_length, embed_dim=self.embed_dim)
    if cfg.mixer == NO_ATTRIBUTE_PROMPTS:
      return
    self.table = prompts.AttributePrompts(num_attributes=self.num_attributes, length=cfg.attribute_length,
                                          embed_dim=self.embed_dim)
    options = dict(max_attributes=cfg.max_attributes, **dict(cfg.mixer_options))
    if self.attribute_groups is None:
      self.mixer = mixers.make_mixer(cfg.mixer, **options)
    else:
      if len(self.attribute_groups) != self.num_attributes:
        raise ConfigError(f"attribute_groups has {len(self.attribute_groups)} entries for "
                          f"{self.num_attributes} attributes")
      self.mixer = mixers.make_grouped_mixer([cfg.mixer] * (max(self.attribute_groups) + 1), **options)

  def __call__(self, attribute_ids: jax.Array, attribute_mask: jax.Array,
               context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """attribute_ids/mask [batch, A], context [batch, H] -> ([batch, P0 + P_mix, H], [batch, P0 + P_mix])
    (P_mix = 0 without attribute prompts)."""
    batch = attribute_ids.shape[0]
    prefix = jnp.broadcast_to(self.prefix()[None], (batch,) + (self.config.prefix_length, self.embed_dim))
    prefix_mask = jnp.ones((batch, self.config.prefix_length), jnp.int32)
    if self.config.mixer == NO_ATTRIBUTE_PROMPTS:
      return prefix, prefix_mask
    attribute_prompts = self.table(attribute_ids)                       # [batch, A, P, H]
    if self.attribute_groups is None:
      mixed, mixed_mask = self.mixer(attribute_prompts, attribute_mask, context=context)
    else:
      groups = jnp.asarray(self.attribute_groups, jnp.int32)[attribute_ids]  # [batch, A]
      mixed, mixed_mask = self.mixer(attribute_prompts, attribute_mask, context=context, groups=groups)
    prompt = jnp.concatenate([prefix.astype(mixed.dtype), mixed], axis=1)
    mask = jnp.concatenate([prefix_mask.astype(mixed_mask.dtype), mixed_mask], axis=1)
    return prompt, mask


def masked_max_pool(embeds: jax.Array, mask: jax.Array) -> jax.Array:
  """[batch, L, H], [batch, L] -> [batch, H]: the attention mixer's summary of the example's input text."""
  neg = jnp.finfo(embeds.dtype).min
  pooled = jnp.max(jnp.where(mask[..., None].astype(bool), embeds, neg), axis=1)
  return jnp.where(jnp.any(mask.astype(bool), axis=1)[:, None], pooled, 0.0)


@dataclasses.dataclass(eq=False)
class MspModel:
  """Binds the soft prompts to a frozen backbone and an ontology. Hashes by identity (a jit static arg)."""

  backbone: Backbone
  ontology: Ontology
  config: MixtureConfig

  def __post_init__(self):
    self.module = SoftPrompts(num_attributes=len(self.ontology.attributes), embed_dim=self.backbone.embed_dim,
                              config=self.config, attribute_groups=attribute_groups(self.ontology, self.config))

  def init(self, rng: jax.Array, frozen_params: Any) -> Any:
    """Soft params: randomly initialised mixer; prefix and table from the backbone's embeddings."""
    cfg = self.config
    ids = jnp.zeros((1, cfg.max_attributes), jnp.int32)
    mask = jnp.zeros((1, cfg.max_attributes), jnp.int32).at[:, 0].set(1)
    context = jnp.zeros((1, self.backbone.embed_dim), jnp.float32)
    init_rng, prompt_rng = jax.random.split(rng)
    params = nn.unbox(self.module.init(init_rng, ids, mask, context))["params"]
    embedding = self.embedding_table(frozen_params)
    tokenizer = self.backbone.tokenizer
    prefix_ids = prompts.instruction_token_ids(tokenizer.encode(INSTRUCTION), cfg.prefix_length,
                                               vocab_size=embedding.shape[0], rng=np.random.default_rng(0))
    if cfg.init == "description":
      table_ids = prompts.attribute_token_ids(self.ontology, tokenizer.encode, cfg.attribute_length)
    else:
      vocab_seed = int(jax.random.randint(prompt_rng, (), 0, 2**31 - 1))
      table_ids = prompts.sampled_vocab_ids(len(self.ontology.attributes), cfg.attribute_length,
                                            vocab_size=embedding.shape[0], rng=np.random.default_rng(vocab_seed))
    params = dict(params)
    params["prefix"] = prompts.set_prompt(params["prefix"], embedding[prefix_ids])
    if cfg.mixer == NO_ATTRIBUTE_PROMPTS:
      return params
    params["table"] = prompts.set_prompt(params["table"], embedding[table_ids])
    return params

  def embedding_table(self, frozen_params: Any) -> jax.Array:
    """[vocab, H]: what the backbone's `embed` maps token ids to (its own scaling included)."""
    vocab = self.backbone.vocab_size
    return self.backbone.embed(frozen_params, jnp.arange(vocab, dtype=jnp.int32)[None])[0]

  def inputs(self, soft_params: Any, frozen_params: Any, batch: dict[str, jax.Array]
             ) -> tuple[jax.Array, jax.Array]:
    """PromptBatch arrays -> (inputs_embeds [batch, P0+P_mix+L, H], inputs_mask [batch, P0+P_mix+L])."""
    text = self.backbone.embed(frozen_params, batch["text_ids"])
    context = masked_max_pool(text, batch["text_mask"])
    prompt, prompt_mask = self.module.apply({"params": soft_params}, batch["attribute_ids"],
                                            batch["attribute_mask"], context)
    embeds = jnp.concatenate([prompt.astype(text.dtype), text], axis=1)
    mask = jnp.concatenate([prompt_mask.astype(jnp.int32), batch["text_mask"].astype(jnp.int32)], axis=1)
    return embeds, mask
