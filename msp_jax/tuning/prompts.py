"""Soft prompts: the instruction prefix `[P0, H]` and one prompt per attribute value `[n_attributes, P, H]`.

This module knows nothing of training or of backbones. Initialisers are injected as factories (the style of
prompt-tuning's `prompts.py`): each factory takes plain arrays -- an embedding table `[vocab, H]` and token
ids -- and returns a Flax initializer `init(key, shape, dtype) -> array`. The paper's choices (Chen et al.
2023, Sec. 3): the prefix starts from the embeddings of an instruction sentence ("Show me three distinct
utterances that all express the"), the remaining rows from vocabulary rows; each attribute starts from the
embeddings of the tokens of its description, repeated to fill its P rows.

Two ways in, one meaning:
  * inside `Module.init`: `AttributePrompts(..., prompt_init=from_token_ids(embedding, ids))`;
  * after `Module.init` (when the embedding table only exists once the frozen backbone is loaded):
    `set_prompt(params, embedding[ids])` with ids from `attribute_token_ids` / `instruction_token_ids`.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.data.schema import Ontology
from msp_jax.errors import ConfigError

Initializer = Callable[..., jax.Array]  # Flax style: init(key, shape, dtype) -> array

# Prompt tuning (Lester et al. 2021) samples initial rows from the 5,000 most frequent tokens; SentencePiece
# and BPE vocabularies list frequent pieces first, so the first 5,000 ids stand in for them.
DEFAULT_POPULATION = 5000
PREFIX_AXES = ("prompt", "prompt_embed")
TABLE_AXES = ("attributes", "prompt", "prompt_embed")


def random_uniform(scale: float = 0.5) -> Initializer:
  """U(-scale, scale): prompt tuning's random initialisation (Lester et al. 2021 use scale 0.5)."""

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def _population(vocab_size: int, population_size: int) -> int:
  if vocab_size < 1 or population_size < 1:
    raise ConfigError(f"cannot sample vocabulary rows from vocab_size={vocab_size}, "
                      f"population_size={population_size}: both must be >= 1")
  return min(vocab_size, population_size)


def _check_length(length: int, what: str, minimum: int = 1) -> None:
  if not isinstance(length, (int, np.integer)) or length < minimum:
    raise ConfigError(f"{what} length={length!r}: a prompt length must be an integer >= {minimum}")


# ---------------------------------------------------------------------------------------------------------
# Token ids (NumPy, host side).
# ---------------------------------------------------------------------------------------------------------


def repeat_to_length(token_ids: Sequence[int], length: int) -> np.ndarray:
  """[len(ids)] -> [length]: the ids cycled until `length` (cut to `length` when longer)."""
  ids = [int(i) for i in token_ids]
  if not ids:
    raise ConfigError("cannot repeat an empty token id list to fill a prompt")
  return np.fromiter(itertools.islice(itertools.cycle(ids), length), dtype=np.int32, count=length)


def attribute_token_ids(ontology: Ontology, encode_fn: Callable[[str], Sequence[int]], length: int) -> np.ndarray:
  """[n_attributes, length] int32: each attribute's description tokens, repeated to fill its prompt.

  Rows follow `ontology.attributes` (the row order of the prompt table). An empty description, or one the
  tokenizer turns into no tokens, is an error naming the domain and the attribute.
  """
  _check_length(length, "attribute prompt")
  rows = []
  for attribute in ontology.attributes:
    where = f"ontology of domain {ontology.domain!r}, attribute {attribute.name!r}"
    if not attribute.description or not attribute.description.strip():
      raise ConfigError(f"{where}: empty description {attribute.description!r}; its soft prompt is initialised "
                        "from the description's tokens, so give it a few words (e.g. the name with '_' as spaces)")
    ids = list(encode_fn(attribute.description))
    if not ids:
      raise ConfigError(f"{where}: description {attribute.description!r} encodes to no tokens; expected at least "
                        "one token to initialise its soft prompt from")
    rows.append(repeat_to_length(ids, length))
  return np.stack(rows) if rows else np.zeros([0, length], np.int32)


def sampled_vocab_ids(num_rows: int, length: int, *, vocab_size: int, rng: np.random.Generator,
                      population_size: int = DEFAULT_POPULATION) -> np.ndarray:
  """[num_rows, length] int32 drawn uniformly from ids [0, min(vocab_size, population_size))."""
  _check_length(length, "sampled prompt")
  high = _population(vocab_size, population_size)
  return rng.integers(0, high, size=(num_rows, length), dtype=np.int32)


def instruction_token_ids(sentence_ids: Sequence[int], length: int, *, vocab_size: int,
                          rng: np.random.Generator, population_size: int = DEFAULT_POPULATION) -> np.ndarray:
  """[length] int32: the instruction sentence's ids (its first `length` if longer), then sampled vocab ids."""
  _check_length(length, "instruction prefix", minimum=0)
  head = np.asarray([int(i) for i in sentence_ids][:length], np.int32)
  rest = sampled_vocab_ids(1, length - len(head), vocab_size=vocab_size, rng=rng,
                           population_size=population_size)[0] if length > len(head) else np.zeros([0], np.int32)
  return np.concatenate([head, rest]).astype(np.int32)


# ---------------------------------------------------------------------------------------------------------
# Initializer factories (plain arrays in, Flax initializer out).
# ---------------------------------------------------------------------------------------------------------


def from_token_ids(embedding: Any, token_ids: Any) -> Initializer:
  """Rows of `embedding [vocab, H]` at `token_ids [...]`: an initializer for shape `[..., H]`."""
  ids = np.asarray(token_ids, np.int32)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    del key  # Deterministic: the rows are chosen by the ids.
    table = jnp.asarray(embedding)
    expected = tuple(ids.shape) + (table.shape[-1],)
    if tuple(shape) != expected:
      raise ConfigError(f"prompt parameter of shape {tuple(shape)} cannot be initialised from token ids of shape "
                        f"{ids.shape} and embeddings of width {table.shape[-1]} (that gives {expected})")
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
      raise ConfigError(f"token ids span [{ids.min()}, {ids.max()}], outside the embedding table's "
                        f"{table.shape[0]} rows")
    return table[ids].astype(dtype)

  return init


def from_sampled_vocab(embedding: Any, population_size: int = DEFAULT_POPULATION) -> Initializer:
  """Rows of `embedding [vocab, H]` at ids drawn (from the init key) from the first `population_size`."""

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    table = jnp.asarray(embedding)
    high = _population(table.shape[0], population_size)
    ids = jax.random.randint(key, tuple(shape[:-1]), 0, high)
    return table[ids].astype(dtype)

  return init


def from_instruction(embedding: Any, sentence_ids: Sequence[int],
                     fill_init: Initializer | None = None) -> Initializer:
  """Prefix `[P0, H]`: the sentence's rows first, then `fill_init` (default: sampled vocabulary rows)."""
  sentence = np.asarray([int(i) for i in sentence_ids], np.int32)
  fill_init = fill_init or from_sampled_vocab(embedding)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    length, width = shape
    head = from_token_ids(embedding, sentence[:length])(key, (min(length, len(sentence)), width), dtype)
    tail = fill_init(key, (length - head.shape[0], width), dtype)
    return jnp.concatenate([head, tail], axis=0)

  return init


def set_prompt(params: Mapping[str, Any], values: Any) -> dict[str, Any]:
  """A prompt module's (unboxed) params `{'prompt': array}` with the array replaced by `values` (same shape).

  For initialising after `Module.init`, e.g. `set_prompt(params['table'], embedding[attribute_ids])`.
  """
  if set(params) != {"prompt"}:
    raise ConfigError(f"expected a prompt module's params {{'prompt': array}}, got keys {sorted(params)}")
  old = params["prompt"]
  values = jnp.asarray(values)
  if tuple(values.shape) != tuple(old.shape):
    raise ConfigError(f"prompt values of shape {tuple(values.shape)} do not fit the prompt parameter of shape "
                      f"{tuple(old.shape)}")
  return {"prompt": values.astype(old.dtype)}


# ---------------------------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------------------------


class InstructionPrefix(nn.Module):
  """The instruction soft prompt `[P0, H]`, shared by every example (paper: P0 = 100).

  `length` 0 is allowed and means "no prefix" (an empty `[0, H]` prompt).
  """

  embed_dim: int
  length: int = 100
  prompt_init: Initializer = random_uniform()
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    """-> prefix [P0, H]."""
    _check_length(self.length, "instruction prefix", minimum=0)
    return self.param("prompt", nn.with_logical_partitioning(self.prompt_init, PREFIX_AXES),
                      (self.length, self.embed_dim), self.param_dtype)


class AttributePrompts(nn.Module):
  """One soft prompt per attribute value: a table `[n_attributes, P, H]` (paper: P = 20).

  Rows follow `Ontology.attributes`; `attribute_ids` index them. Padded attribute slots may hold any valid id
  (conventionally 0): the mixers ignore them through the attribute mask.
  """

  num_attributes: int
  embed_dim: int
  length: int = 20
  prompt_init: Initializer = random_uniform()
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, attribute_ids: jax.Array) -> jax.Array:
    """attribute_ids [batch, max_attr] int -> prompts [batch, max_attr, P, H]."""
    _check_length(self.length, "attribute prompt")
    if self.num_attributes < 1:
      raise ConfigError(f"num_attributes={self.num_attributes}: an attribute prompt table needs >= 1 attribute")
    table = self.param("prompt", nn.with_logical_partitioning(self.prompt_init, TABLE_AXES),
                       (self.num_attributes, self.length, self.embed_dim), self.param_dtype)
    return jnp.take(table, attribute_ids, axis=0)
