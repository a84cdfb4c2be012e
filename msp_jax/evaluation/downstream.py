"""Downstream evaluation: train a task model on seed (+ augmented) data and score it on the domain's test split,
so a user sees whether augmentation helped (the last step of the pipeline, docs/design.md "Pipeline").

The task model here is an intent classifier for multi-intent domains (NLU++, custom intent/slot domains such as
`front_desk`): frozen all-MiniLM-L6-v2 sentence embeddings [n, 384] (`sentence_encoder`, computed once) feed a
small MLP (one hidden layer, GELU) with one sigmoid output per intent of the ontology; binary cross-entropy,
AdamW, mini-batches; an utterance's predicted intents are those with probability >= 0.5. The score is intent
micro-F1 (`metrics.intent_micro_f1`, NLU++'s standard metric). The authors fine-tune a 770M seq2seq model
(GODEL) instead; this model trains in seconds on CPU, which is what a side-by-side of several training sets
needs. It stays as the fast option for intent domains; the default for comparisons is the fine-tuned model of
every task kind (`task_models`, `compare`).

  params = train_classifier(features, labels, config)      # features [n, 384], labels [n, n_intents] in {0, 1}
  predicted = predict(params, test_features)                # [n_test, n_intents] bool
  report = compare_training_sets(baselines.training_sets(seeds, synthetic), test, ontology, encoder)

Pure functions around one jitted training step; deterministic given `ClassifierConfig.seed`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from msp_jax.evaluation import metrics
from msp_jax.data.schema import Example, Ontology
from msp_jax.errors import ConfigError

Params = dict


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """Training settings of the downstream intent classifier."""

  hidden: int = 256
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  epochs: int = 60
  batch_size: int = 32
  threshold: float = 0.5
  seed: int = 0

  def __post_init__(self):
    for field in ("hidden", "epochs", "batch_size"):
      if getattr(self, field) < 1:
        raise ConfigError(f"ClassifierConfig.{field}={getattr(self, field)}: expected >= 1")
    if not 0.0 < self.threshold < 1.0:
      raise ConfigError(f"ClassifierConfig.threshold={self.threshold}: expected a probability in (0, 1)")
    if not self.learning_rate > 0:
      raise ConfigError(f"ClassifierConfig.learning_rate={self.learning_rate}: expected > 0")


SUPPORTED_TASKS = ("multi_intent",)


def unsupported_reason(ontology: Ontology) -> str | None:
  """Why the downstream model cannot score this domain, or None when it can."""
  if ontology.task not in SUPPORTED_TASKS:
    return (f"domain {ontology.domain!r} is a {ontology.task!r} task; the downstream model built so far is the "
            "intent classifier of multi-intent domains")
  return None


class IntentHead(nn.Module):
  """features [batch, d] -> intent logits [batch, n_intents]."""

  hidden: int
  num_intents: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    h = nn.gelu(nn.Dense(self.hidden, name="hidden")(features))
    return nn.Dense(self.num_intents, name="logits")(h)


def intent_targets(examples: Sequence[Example], ontology: Ontology) -> tuple[np.ndarray, tuple[str, ...]]:
  """labels [n, n_intents] float32 (1 where the example carries the intent) and the intent names (columns)."""
  names = tuple(a.name for a in ontology.attributes if a.kind == "intent")
  if not names:
    raise ConfigError(f"domain {ontology.domain!r} has no intents: the downstream intent classifier needs a "
                      "multi-intent domain")
  column = {name: i for i, name in enumerate(names)}
  labels = np.zeros((len(examples), len(names)), np.float32)
  for row, example in enumerate(examples):
    for intent in example.intents:
      kind = ontology.attributes[ontology.index(intent, where=f"example {example.uid!r}")].kind
      if kind != "intent":
        raise ConfigError(f"example {example.uid!r} has intent {intent!r}, which domain {ontology.domain!r} "
                          f"lists as a {kind}, not an intent")
      labels[row, column[intent]] = 1.0
  return labels, names


def _loss(params: Params, model: IntentHead, features: jax.Array, labels: jax.Array, weights: jax.Array
          ) -> jax.Array:
  """Mean binary cross-entropy over the real rows of a batch (weights [batch]: 1 real, 0 padding)."""
  per_row = optax.sigmoid_binary_cross_entropy(model.apply({"params": params}, features), labels).mean(-1)
  return (per_row * weights).sum() / jnp.maximum(weights.sum(), 1.0)


@functools.lru_cache(maxsize=16)
def _trainer(hidden: int, num_intents: int, learning_rate: float, weight_decay: float):
  """(model, optimizer, jitted step) for one head shape and optimiser: compiled once, reused across calls."""
  model = IntentHead(hidden, num_intents)
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

  @jax.jit
  def step(params, opt_state, x, y, w):
    """One AdamW step on a batch: x [batch, d], y [batch, n_intents], w [batch] (0 = padding row)."""
    loss, grads = jax.value_and_grad(_loss)(params, model, x, y, w)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return model, optimizer, step


def train_classifier(features: np.ndarray, labels: np.ndarray, config: ClassifierConfig = ClassifierConfig()
                     ) -> Params:
  """Trains an `IntentHead` on features [n, d] and labels [n, n_intents]; returns its params.

  Every epoch visits the examples in a fresh order (from `config.seed`); the last batch is padded with
  weight-0 rows, so every step has the same shapes and compiles once.
  """
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels, np.float32)
  if features.ndim != 2 or labels.ndim != 2 or len(features) != len(labels) or len(features) == 0:
    raise ConfigError(f"train_classifier: features {features.shape} and labels {labels.shape} must be [n, d] "
                      "and [n, n_intents] with the same n >= 1")
  model, optimizer, step = _trainer(config.hidden, labels.shape[1], config.learning_rate, config.weight_decay)
  params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, features.shape[1])))["params"]
  opt_state = optimizer.init(params)
  batch = config.batch_size
  rng = np.random.default_rng(config.seed)
  for _ in range(config.epochs):
    order = rng.permutation(len(features))
    for start in range(0, len(features), batch):
      rows = order[start:start + batch]
      pad = batch - len(rows)
      x = np.concatenate([features[rows], np.zeros((pad, features.shape[1]), np.float32)])
      y = np.concatenate([labels[rows], np.zeros((pad, labels.shape[1]), np.float32)])
      w = np.concatenate([np.ones(len(rows), np.float32), np.zeros(pad, np.float32)])
      params, opt_state, _ = step(params, opt_state, x, y, w)
  return params


def predict(params: Params, features: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """[n, n_intents] bool: the intents whose probability reaches `threshold`."""
  num_intents = params["logits"]["bias"].shape[0]
  hidden = params["hidden"]["bias"].shape[0]
  logits = IntentHead(hidden, num_intents).apply({"params": params}, jnp.asarray(features, jnp.float32))
  return np.asarray(jax.nn.sigmoid(logits) >= threshold)


def compare_training_sets(training_sets: dict[str, Sequence[Example]], test: Sequence[Example],
                          ontology: Ontology, encoder, config: ClassifierConfig = ClassifierConfig(),
                          repeats: int = 3) -> dict:
  """Trains the intent classifier on each training set `repeats` times (classifier seeds config.seed,
  config.seed + 1, ...) and scores each on `test`.

  Returns {"test_examples", "repeats", "sets": {name: {"examples", "f1_mean", "f1_std", "precision_mean",
  "recall_mean", "f1_runs"}}}. Every distinct text is embedded once (the sets share the seeds).
  """
  reason = unsupported_reason(ontology)
  if reason:
    raise ConfigError(f"downstream: {reason}")
  if not test:
    raise ConfigError(f"downstream: domain {ontology.domain!r} has no test examples to score on")
  if repeats < 1:
    raise ConfigError(f"downstream: repeats={repeats}, expected >= 1")
  texts = list(dict.fromkeys([e.text for examples in training_sets.values() for e in examples]
                             + [e.text for e in test]))
  embedding = dict(zip(texts, encoder.encode(texts)))
  test_features = np.stack([embedding[e.text] for e in test])
  report: dict = {"test_examples": len(test), "repeats": repeats, "classifier": dataclasses.asdict(config),
                  "sets": {}}
  for name, examples in training_sets.items():
    labels, names = intent_targets(examples, ontology)
    features = np.stack([embedding[e.text] for e in examples])
    runs = []
    for offset in range(repeats):
      run_config = dataclasses.replace(config, seed=config.seed + offset)
      predicted = predict(train_classifier(features, labels, run_config), test_features, config.threshold)
      runs.append(metrics.intent_micro_f1([e.intents for e in test],
                                          [[names[j] for j in np.flatnonzero(row)] for row in predicted]))
    f1 = np.array([r["f1"] for r in runs])
    report["sets"][name] = {"examples": len(examples), "f1_mean": float(f1.mean()), "f1_std": float(f1.std()),
                            "precision_mean": float(np.mean([r["precision"] for r in runs])),
                            "recall_mean": float(np.mean([r["recall"] for r in runs])),
                            "f1_runs": f1.tolist()}
  return report


def format_report(report: dict) -> str:
  """The comparison as a small table (one line per training set)."""
  lines = [f"downstream intent classifier, {report['test_examples']} test examples, mean of {report['repeats']} "
           "seeds:", f"  {'training set':<14} {'examples':>8} {'intent F1 (%)':>17} {'precision':>9} {'recall':>7}"]
  for name, row in report["sets"].items():
    lines.append(f"  {name:<14} {row['examples']:>8} {row['f1_mean']:>11.1f} ± {row['f1_std']:>3.1f} "
                 f"{row['precision_mean']:>9.1f} {row['recall_mean']:>7.1f}")
  return "\n".join(lines)
