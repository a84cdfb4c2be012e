"""Host-side assembly of MSP model inputs: the template text, exemplars, tokenisation and padding.

Per example the backbone reads (paper, authors' template; soft parts in brackets):

  [instruction prefix][mixed attribute prompt] <attribute names> in the <domain> domain:
  1) <exemplar>
  2) <exemplar>
  3)

and must write the example's serialised target (its text with labels, `msp_jax.data.serialization`) + EOS.
Exemplars are training examples of the domain sharing the most attributes with the example (a pool of the
top 10, 2 drawn). At generation the last exemplar is the seed example itself.

Everything here is NumPy on the host with static padded shapes, so the jitted steps compile once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from msp_jax.data.schema import Example, Ontology
from msp_jax.errors import ConfigError
from msp_jax.padding import pad_rows

NUM_EXEMPLARS = 2
EXEMPLAR_POOL = 10


@dataclasses.dataclass(frozen=True)
class InputShapes:
  """Static padded sizes: one compilation per `InputShapes`."""

  max_attributes: int = 8    # A: attributes per example
  max_text_len: int = 96     # L: template + exemplar tokens
  max_target_len: int = 48   # T: target tokens incl. EOS


@dataclasses.dataclass(frozen=True)
class PromptBatch:
  """One padded batch. All arrays are NumPy; masks are 1 for real entries.

  attribute_ids  [batch, A] int32 rows of the attribute prompt table
  attribute_mask [batch, A] int32
  text_ids       [batch, L] int32 template + exemplar tokens (right-padded)
  text_mask      [batch, L] int32
  targets        [batch, T] int32 serialised example + EOS (right-padded)
  targets_mask   [batch, T] int32
  """

  attribute_ids: np.ndarray
  attribute_mask: np.ndarray
  text_ids: np.ndarray
  text_mask: np.ndarray
  targets: np.ndarray
  targets_mask: np.ndarray

  @property
  def size(self) -> int:
    return int(self.attribute_ids.shape[0])

  def arrays(self) -> dict[str, np.ndarray]:
    return dataclasses.asdict(self)


def template_text(attribute_names: Sequence[str], domain: str, exemplars: Sequence[str]) -> str:
  """The text part of the model input (after the soft prompts); exemplars are serialised examples."""
  readable = ", ".join(name.replace("_", " ") for name in attribute_names)
  lines = [f"{readable} in the {domain.replace('_', ' ')} domain:"]
  lines += [f"{i}) {text}" for i, text in enumerate(exemplars, start=1)]
  lines.append(f"{len(exemplars) + 1}) ")
  return "\n".join(lines)


def select_exemplars(example: Example, pool: Sequence[Example], rng: np.random.Generator,
                     num: int = NUM_EXEMPLARS, pool_size: int = EXEMPLAR_POOL) -> list[Example]:
  """`num` examples drawn from the `pool_size` pool examples sharing the most attributes with `example`.

  The example itself (same uid) is never its own exemplar. Ties keep pool order, so the choice is a pure
  function of (example, pool, rng state).
  """
  wanted = set(example.attributes)
  candidates = [e for e in pool if e.uid != example.uid]
  if not candidates:
    return []
  overlap = np.array([len(wanted & set(e.attributes)) for e in candidates])
  order = np.argsort(-overlap, kind="stable")[:pool_size]
  chosen = rng.choice(order, size=min(num, len(order)), replace=False)
  return [candidates[i] for i in sorted(chosen)]


def attribute_row_ids(example_attributes: Sequence[str], ontology: Ontology, max_attributes: int,
                      where: str = "example") -> tuple[np.ndarray, np.ndarray]:
  """Ontology rows `[A]` and mask `[A]` of an attribute set; clear errors for unknown or too many."""
  if len(example_attributes) > max_attributes:
    raise ConfigError(f"{where} has {len(example_attributes)} attributes {list(example_attributes)}, more than "
                      f"the mixer maximum max_attributes={max_attributes}; raise max_attributes")
  ids = np.zeros([max_attributes], np.int32)
  mask = np.zeros([max_attributes], np.int32)
  for i, name in enumerate(example_attributes):
    ids[i] = ontology.index(name, where=where)
    mask[i] = 1
  return ids, mask


def encode_prompts(attribute_sets: Sequence[Sequence[str]], domains: Sequence[str],
                   exemplars: Sequence[Sequence[str]], *, ontology: Ontology, encode: Callable[[str], list[int]],
                   pad_id: int, shapes: InputShapes, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """The input half of a batch: attribute rows [batch, A] + mask and template text [batch, L] + mask.

  `exemplars[i]` are serialised examples shown before the cue. Text longer than `max_text_len` drops
  exemplars, oldest first, then (only if the attribute line alone is too long) its leading tokens, never
  the cue "3) ". `names[i]` names row i in errors (e.g. the example uid).
  """
  rows = [attribute_row_ids(attrs, ontology, shapes.max_attributes,
                            where=f"example {names[i]}" if names else f"request #{i}")
          for i, attrs in enumerate(attribute_sets)]
  text_rows = []
  for attrs, domain, shots in zip(attribute_sets, domains, exemplars):
    shots = list(shots)
    ids = encode(template_text(attrs, domain, shots))
    while len(ids) > shapes.max_text_len and shots:
      shots.pop(0)
      ids = encode(template_text(attrs, domain, shots))
    text_rows.append(ids[-shapes.max_text_len:])
  text_ids, text_mask = pad_rows(text_rows, shapes.max_text_len, pad_id)
  return {"attribute_ids": np.stack([r[0] for r in rows]), "attribute_mask": np.stack([r[1] for r in rows]),
          "text_ids": text_ids, "text_mask": text_mask}


def build_batch(examples: Sequence[Example], *, exemplars: Sequence[Sequence[str]], targets: Sequence[str],
                ontology: Ontology, encode: Callable[[str], list[int]], eos_id: int, pad_id: int,
                shapes: InputShapes) -> PromptBatch:
  """Pads one training batch: `encode_prompts` of each example + its target `targets[i]` and EOS.

  Targets longer than `max_target_len - 1` tokens are cut before the EOS.
  """
  prompt = encode_prompts([e.attributes for e in examples], [e.domain for e in examples], exemplars,
                          ontology=ontology, encode=encode, pad_id=pad_id, shapes=shapes,
                          names=[e.uid for e in examples])
  target_rows = [encode(t)[:shapes.max_target_len - 1] + [eos_id] for t in targets]
  target_ids, target_mask = pad_rows(target_rows, shapes.max_target_len, pad_id)
  return PromptBatch(targets=target_ids, targets_mask=target_mask, **prompt)


def make_batch_fn(examples: Sequence[Example], *, exemplar_pool: Sequence[Example], ontology: Ontology,
                  serialize: Callable[[Example], str], encode: Callable[[str], list[int]], eos_id: int,
                  pad_id: int, shapes: InputShapes, batch_size: int, seed: int) -> Callable[[int], PromptBatch]:
  """`batch_at(step) -> PromptBatch`: a pure function of the step (the data position).

  Epoch e visits the examples in the permutation drawn from (seed, e); the exemplars of the example at
  global position i are drawn from (seed, i). So resuming at step s reproduces the uninterrupted run exactly.
  """
  if not examples:
    raise ConfigError("no training examples: the train split is empty")
  examples = list(examples)
  n = len(examples)

  def batch_at(step: int) -> PromptBatch:
    positions = range(step * batch_size, (step + 1) * batch_size)
    chosen, shots = [], []
    for position in positions:
      epoch, offset = divmod(position, n)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      example = examples[order[offset]]
      rng = np.random.default_rng([seed, 1_000_003, position])
      chosen.append(example)
      shots.append([serialize(e) for e in select_exemplars(example, exemplar_pool, rng)])
    return build_batch(chosen, exemplars=shots, targets=[serialize(e) for e in chosen], ontology=ontology,
                       encode=encode, eos_id=eos_id, pad_id=pad_id, shapes=shapes)

  return batch_at


def fixed_batches(examples: Sequence[Example], *, exemplar_pool: Sequence[Example], ontology: Ontology,
                  serialize: Callable[[Example], str], encode: Callable[[str], list[int]], eos_id: int,
                  pad_id: int, shapes: InputShapes, batch_size: int, seed: int = 0) -> list[PromptBatch]:
  """Every example exactly once (dev/test loss); the last batch is filled with masked-out copies."""
  batches = []
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    real = len(chunk)
    chunk += [chunk[0]] * (batch_size - real)
    shots = [[serialize(e) for e in select_exemplars(ex, exemplar_pool, np.random.default_rng([seed, start + i]))]
             for i, ex in enumerate(chunk)]
    batch = build_batch(chunk, exemplars=shots, targets=[serialize(e) for e in chunk], ontology=ontology,
                        encode=encode, eos_id=eos_id, pad_id=pad_id, shapes=shapes)
    batch.targets_mask[real:] = 0  # Filler rows count for nothing.
    batches.append(batch)
  return batches
