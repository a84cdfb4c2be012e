"""The output heads of a downstream task model, their losses, and what their outputs mean as labels.

One task model per task kind, each an encoder with one or two linear heads on its last hidden states
[batch, length, hidden]:

  multi_intent    intent head: one sigmoid per intent on the mean-pooled states (NLU++ and custom domains are
                  multi-label), plus a BIO tag head over word pieces when the domain has slots;
  ner             BIO tag head (CrossNER entity types);
  semantic_parse  intent head: a softmax over intents for the root intent, plus the BIO tag head for the slots
                  under the root (TOPv2 flat parses, `topv2_parse`).

`LabelSpace` fixes the columns of both heads from the ontology and checks every example against it, so a label
the ontology lacks fails with the example's uid instead of training a head that cannot predict it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from msp_jax.data.schema import Example, Ontology, TaskKind
from msp_jax.data.serialization import check_spans
from msp_jax.errors import ConfigError, DataError
from msp_jax.evaluation import spans as span_tags
from msp_jax.evaluation.topv2_parse import root_intent

TASK_KINDS = ("multi_intent", "ner", "semantic_parse")


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """The labels a task model predicts: intent columns and BIO tags, in ontology order."""

  task: TaskKind
  domain: str
  intents: tuple[str, ...]     # intent head columns; () when the model has no intent head
  span_labels: tuple[str, ...]  # slot / entity types; () when the model has no tag head
  multi_label: bool            # sigmoid per intent (True) or softmax over intents (False)

  @property
  def tags(self) -> tuple[str, ...]:
    return span_tags.tag_names(self.span_labels) if self.span_labels else ()

  @property
  def tag_index(self) -> dict[str, int]:
    return {tag: i for i, tag in enumerate(self.tags)}

  @classmethod
  def of(cls, ontology: Ontology) -> LabelSpace:
    if ontology.task not in TASK_KINDS:
      raise ConfigError(f"domain {ontology.domain!r}: unknown task kind {ontology.task!r}; expected one of "
                        f"{', '.join(TASK_KINDS)}")
    intents = tuple(a.name for a in ontology.attributes if a.kind == "intent") if ontology.task != "ner" else ()
    span_labels = tuple(a.name for a in ontology.attributes if a.kind != "intent")
    if not intents and not span_labels:
      raise ConfigError(f"domain {ontology.domain!r} has no intents and no span labels: nothing to predict")
    if ontology.task == "semantic_parse" and not intents:
      raise ConfigError(f"domain {ontology.domain!r} is a semantic_parse task without intents (a TOP parse "
                        "needs a root intent)")
    return cls(ontology.task, ontology.domain, intents, span_labels, multi_label=ontology.task == "multi_intent")

  def check(self, examples: Sequence[Example], split: str) -> None:
    """DataError naming the split and example when a label is absent from the ontology or a span is not a
    non-empty piece of its text; ConfigError when there are no examples."""
    if not examples:
      raise ConfigError(f"downstream: the {split} set of domain {self.domain!r} is empty")
    intents, labels = set(self.intents), set(self.span_labels)
    for example in examples:
      where = f"{split} example {example.uid!r}"
      unknown = sorted({i for i in example.intents if i not in intents} if self.task != "ner" else ())
      unknown += sorted({s.label for s in example.spans if s.label not in labels})
      if unknown:
        raise DataError(f"{where} has labels {unknown} that are not in the ontology of domain {self.domain!r}")
      problem = check_spans(example.text, example.spans)
      if problem:
        raise DataError(f"{where}: {problem}")
      if self.task == "semantic_parse":
        root_intent(example)

  def intent_targets(self, examples: Sequence[Example]) -> np.ndarray:
    """[n, n_intents] float32 multi-hot (multi-label) or one-hot of the root intent (single label)."""
    column = {name: i for i, name in enumerate(self.intents)}
    out = np.zeros((len(examples), len(self.intents)), np.float32)
    if not self.intents:
      return out
    for row, example in enumerate(examples):
      for intent in (example.intents if self.multi_label else (root_intent(example),)):
        out[row, column[intent]] = 1.0
    return out


def init_heads(space: LabelSpace, hidden: int, rng: np.random.Generator, intent_prior: np.ndarray | None = None
               ) -> dict:
  """Head params: 'intent' {kernel [hidden, n_intents], bias} and/or 'tags' {kernel [hidden, n_tags], bias};
  kernels N(0, 0.02) (BERT's initialiser range), biases 0.

  intent_prior: [n_intents] share of training examples carrying each intent. The intent biases then start at
  its log-odds (sigmoid) or log (softmax), so the untrained head already predicts each intent's base rate:
  with 40 rare intents a zero bias predicts 50% everywhere and the first epochs only unlearn that.
  """
  out = {}
  for name, width in (("intent", len(space.intents)), ("tags", len(space.tags))):
    kernel = (0.02 * rng.standard_normal((hidden, width))).astype(np.float32)
    if width:
      out[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(width, jnp.float32)}
  if intent_prior is not None and space.intents:
    prior = np.clip(np.asarray(intent_prior, np.float64), 1e-3, 1 - 1e-3)
    bias = np.log(prior / (1 - prior)) if space.multi_label else np.log(prior)
    out["intent"]["bias"] = jnp.asarray(bias, jnp.float32)
  return out


def apply_heads(heads: dict, hidden: jax.Array, mask: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
  """hidden [batch, length, hidden], mask [batch, length] -> (intent logits [batch, n_intents] or None,
  tag logits [batch, length, n_tags] or None). The intent head reads the masked mean of the states (the
  pooling all-MiniLM-L6-v2 was trained with)."""
  intent_logits = tag_logits = None
  if "intent" in heads:
    weights = mask.astype(hidden.dtype)[..., None]
    pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    intent_logits = pooled @ heads["intent"]["kernel"] + heads["intent"]["bias"]
  if "tags" in heads:
    tag_logits = hidden @ heads["tags"]["kernel"] + heads["tags"]["bias"]
  return intent_logits, tag_logits


def loss(intent_logits: jax.Array | None, tag_logits: jax.Array | None, intent_targets: jax.Array,
         tag_targets: jax.Array, row_weights: jax.Array, multi_label: bool) -> jax.Array:
  """Intent loss (per-intent binary cross-entropy summed over intents, or softmax cross-entropy) averaged over
  real rows, plus the per-piece tag cross-entropy averaged over real pieces (targets IGNORE skipped).

  intent_targets [batch, n_intents], tag_targets [batch, length] int32, row_weights [batch] (0 = padding row).
  """
  total = jnp.float32(0.0)
  if intent_logits is not None:
    if multi_label:
      per_row = optax.sigmoid_binary_cross_entropy(intent_logits, intent_targets).sum(-1)
    else:
      per_row = optax.softmax_cross_entropy(intent_logits, intent_targets)
    total += (per_row * row_weights).sum() / jnp.maximum(row_weights.sum(), 1.0)
  if tag_logits is not None:
    real = (tag_targets != span_tags.IGNORE) & (row_weights[:, None] > 0)
    per_piece = optax.softmax_cross_entropy_with_integer_labels(tag_logits, jnp.maximum(tag_targets, 0))
    total += jnp.where(real, per_piece, 0.0).sum() / jnp.maximum(real.sum(), 1)
  return total


def decode_intents(space: LabelSpace, intent_scores: np.ndarray, threshold: float) -> list[tuple[str, ...]]:
  """intent probabilities [n, n_intents] -> intents per example: those >= threshold (multi-label), or the argmax."""
  if not space.intents:
    return [() for _ in range(len(intent_scores))]
  if space.multi_label:
    return [tuple(space.intents[j] for j in np.flatnonzero(row >= threshold)) for row in intent_scores]
  return [(space.intents[int(j)],) for j in intent_scores.argmax(-1)]
