"""Prompt tuning against a frozen backbone: the jitted step (pure) and the resumable loop around it.

Only the soft prompts and the mixer train. The frozen backbone params are a separate argument of the step,
never part of the optimizer state, and no gradient is taken with respect to them (the step differentiates
w.r.t. its first argument only). State in, state out: `TrainState` is a plain dict
`{'params', 'opt_state', 'step'}` so Orbax saves and restores it as one tree.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import optax

from msp_jax.tuning import checkpointing
from msp_jax import distributed
from msp_jax.config_fields import new_setting
from msp_jax.errors import ConfigError
from msp_jax.tuning.losses import target_nll
from msp_jax.tuning.model_inputs import PromptBatch
from msp_jax.tuning.msp_model import MspModel
from msp_jax.partitioning import replicated, shard_batch
from msp_jax.progress import MetricsLogger, Progress

TrainState = dict  # {'params': soft params, 'opt_state': optax state, 'step': int32 scalar}

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("constant", "linear", "cosine")
BACKBONE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings. Paper: AdamW lr 0.1 (NLU++) / 0.3 (CrossNER), effective batch 24."""

  steps: int = 300
  batch_size: int = 8
  learning_rate: float = 0.1
  optimizer: str = "adamw"
  schedule: str = "constant"
  warmup_steps: int = 0
  weight_decay: float = 0.0
  grad_clip_norm: float = 1.0
  seed: int = 0
  log_every: int = 10
  eval_every: int = 100
  checkpoint_every: int = 100
  # 'bfloat16': the frozen backbone's matmul kernels are stored in bfloat16 for training, and its forward and
  # activation-gradient matmuls read bfloat16 inputs (float32 sums); prompts, mixer, optimizer state, norms,
  # softmax and the loss stay float32 (`frozen_training_params`). Speed and loss against float32: README, Benchmarks.
  backbone_dtype: str = new_setting("float32")

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"schedule={self.schedule!r} is not one of {SCHEDULES}")
    for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
    if not self.learning_rate > 0:
      raise ConfigError(f"learning_rate={self.learning_rate} must be > 0")
    if self.backbone_dtype not in BACKBONE_DTYPES:
      raise ConfigError(f"TrainConfig.backbone_dtype={self.backbone_dtype!r}: expected one of "
                        f"{', '.join(BACKBONE_DTYPES)}")


def frozen_training_params(backbone: Any, params: Any, dtype: str) -> Any:
  """The frozen params a training step reads (`TrainConfig.backbone_dtype`): `params` for 'float32'; for
  'bfloat16' the same tree with every 2-D matmul kernel stored bfloat16, which makes the Llama layers' forward
  and activation-gradient matmuls read bfloat16 inputs (`llama._project`, float32 sums). The embedding table,
  and with it a tied LM head, and the norms stay float32. Same tree structure, so it shards like `params`."""
  if dtype == "float32":
    return params
  if getattr(backbone, "is_encoder_decoder", True):
    raise ConfigError(f"TrainConfig.backbone_dtype={dtype!r} is for Llama-family backbones; "
                      f"{getattr(backbone, 'name', type(backbone).__name__)} is an encoder-decoder and trains in "
                      "float32: bind msp.TrainConfig.backbone_dtype = 'float32'")

  def cast(path, leaf):
    is_kernel = getattr(path[-1], "key", None) == "kernel" and getattr(leaf, "ndim", 0) == 2
    return jnp.asarray(leaf, dtype) if is_kernel else leaf

  return jax.tree_util.tree_map_with_path(cast, params)


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
  decay_steps = max(config.steps - config.warmup_steps, 1)
  if config.schedule == "constant":
    main = optax.constant_schedule(config.learning_rate)
  elif config.schedule == "linear":
    main = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
  else:
    main = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
  if config.warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  return optax.join_schedules([warmup, main], [config.warmup_steps])


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(config)
  if config.optimizer == "adamw":
    update = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    update = optax.adafactor(schedule, weight_decay_rate=config.weight_decay or None)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), update)


def example_nll(model: MspModel, soft_params: Any, frozen_params: Any,
                batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Per-example summed NLL [batch] and token counts [batch] of the targets given the prompted inputs."""
  inputs_embeds, inputs_mask = model.inputs(soft_params, frozen_params, batch)
  logits = model.backbone.target_logits(frozen_params, inputs_embeds, inputs_mask, batch["targets"],
                                        batch["targets_mask"])
  return target_nll(logits, batch["targets"], batch["targets_mask"])


def loss_fn(soft_params: Any, frozen_params: Any, batch: dict[str, jax.Array], model: MspModel):
  """Mean NLL per target token over the batch (token-weighted, like T5X's loss normalisation)."""
  nll, tokens = example_nll(model, soft_params, frozen_params, batch)
  total_tokens = jnp.maximum(jnp.sum(tokens), 1.0)
  return jnp.sum(nll) / total_tokens, total_tokens


def init_state(model: MspModel, frozen_params: Any, optimizer: optax.GradientTransformation,
               rng: jax.Array) -> TrainState:
  params = model.init(rng, frozen_params)
  return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros([], jnp.int32)}


def make_train_step(model: MspModel, optimizer: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh | None = None) -> Callable:
  """`step(state, frozen_params, batch) -> (state, metrics)`, jitted; state is donated (updated in place)."""

  def step(state: TrainState, frozen_params: Any, batch: dict[str, jax.Array]):
    (loss, tokens), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], frozen_params, batch,
                                                                       model)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "tokens": tokens, "grad_norm": optax.tree.norm(grads)}
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  if mesh is None:
    return jax.jit(step, donate_argnums=(0,))
  # Soft prompts, mixer and optimizer state are small: replicated. Batches arrive split over 'data'.
  out = (replicated(mesh), replicated(mesh))
  return jax.jit(step, donate_argnums=(0,), out_shardings=out)


def make_eval_step(model: MspModel) -> Callable:
  """`eval_step(soft_params, frozen_params, batch) -> (nll_sum, token_count)`, jitted."""

  def eval_step(soft_params, frozen_params, batch):
    nll, tokens = example_nll(model, soft_params, frozen_params, batch)
    return jnp.sum(nll), jnp.sum(tokens)

  return jax.jit(eval_step)


def evaluate(eval_step: Callable, soft_params: Any, frozen_params: Any, batches: Iterable[PromptBatch],
             mesh: jax.sharding.Mesh | None = None) -> float:
  """Mean NLL per target token over `batches`."""
  total, count = 0.0, 0.0
  for batch in batches:
    arrays = batch.arrays() if mesh is None else shard_batch(batch.arrays(), mesh)
    nll, tokens = eval_step(soft_params, frozen_params, arrays)
    total += float(nll)
    count += float(tokens)
  return total / max(count, 1.0)


@dataclasses.dataclass(frozen=True)
class TrainResult:
  state: TrainState
  best_dev_loss: float
  first_dev_loss: float
  resumed_from: int | None
  history: list[dict]


def train(model: MspModel, frozen_params: Any, batch_at: Callable[[int], PromptBatch],
          dev_batches: Sequence[PromptBatch], config: TrainConfig, workdir: str | pathlib.Path,
          manifest: dict, *, mesh: jax.sharding.Mesh | None = None, show_progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
  """Trains for `config.steps` steps, resuming from the newest readable checkpoint in `workdir/checkpoints`.

  `batch_at(step)` is a pure function of the step (the data position), so a resumed run sees exactly the
  batches an uninterrupted one would and ends bit-identical. The best params by dev loss are kept in
  `workdir/best` (the exported prompt checkpoint); TensorBoard scalars go to `workdir/tensorboard`.
  `stop_after` ends the loop early after that many steps of this call (tests, time-boxed runs).
  """
  workdir = pathlib.Path(workdir)
  # The optimizer fixes the layout of the saved optimizer state, so a resumed run must use the same one.
  manifest = {**manifest, "optimizer": config.optimizer}
  optimizer = make_optimizer(config)
  train_step = make_train_step(model, optimizer, mesh)
  eval_step = make_eval_step(model)
  state = init_state(model, frozen_params, optimizer, jax.random.PRNGKey(config.seed))
  if mesh is not None:  # before restoring: Orbax restores into this layout, which every process can address
    state = jax.device_put(state, replicated(mesh))
  checkpoints = checkpointing.open_manager(workdir / "checkpoints", remove_partial_saves=True)
  best = checkpointing.open_manager(workdir / "best", max_to_keep=1, remove_partial_saves=True)
  coordinator = distributed.is_coordinator()  # several processes: one log and one progress bar, not one each
  resumed = checkpointing.restore_newest_readable(checkpoints, state, manifest)
  resumed_from = None
  best_dev_loss = math.inf
  first_dev_loss = math.nan
  if resumed is not None:
    state, resumed_from = resumed.state, resumed.step
    best_dev_loss = resumed.manifest.get("best_dev_loss", math.inf)
    first_dev_loss = resumed.manifest.get("first_dev_loss", math.nan)
    for note in resumed.set_aside if coordinator else ():
      print(f"warning: {note}", file=sys.stderr)  # never silently: the user learns which step was taken

  def run_manifest(step: int, **extra) -> dict:
    return {**manifest, "step": step, "data_position": step * config.batch_size,
            "best_dev_loss": best_dev_loss, "first_dev_loss": first_dev_loss, **extra}

  start = int(state["step"])
  if start == 0 and dev_batches:
    first_dev_loss = evaluate(eval_step, state["params"], frozen_params, dev_batches, mesh)
  logger = MetricsLogger(workdir / "tensorboard", enabled=coordinator)
  progress = Progress(total=config.steps, initial=start, unit="step", enabled=show_progress and coordinator)
  history: list[dict] = []
  schedule = learning_rate_schedule(config)
  window_tokens, window_start = 0.0, time.perf_counter()
  end = config.steps if stop_after is None else min(config.steps, start + stop_after)
  for step in range(start, end):
    batch = batch_at(step).arrays()
    state, metrics = train_step(state, frozen_params, batch if mesh is None else shard_batch(batch, mesh))
    done = step + 1
    window_tokens += float(batch["targets_mask"].sum() + batch["text_mask"].sum())
    if done % config.log_every == 0 or done == end:
      loss = float(metrics["loss"])  # waits for the step: the time below covers the computation, not dispatch
      elapsed = time.perf_counter() - window_start
      record = {"step": done, "loss": loss, "grad_norm": float(metrics["grad_norm"]),
                "learning_rate": float(schedule(step)), "tokens_per_s": window_tokens / max(elapsed, 1e-9)}
      history.append(record)
      logger.scalars(done, {k: v for k, v in record.items() if k != "step"}, prefix="train")
      progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
      window_tokens, window_start = 0.0, time.perf_counter()
    if dev_batches and (done % config.eval_every == 0 or done == config.steps):
      dev_loss = evaluate(eval_step, state["params"], frozen_params, dev_batches, mesh)
      logger.scalars(done, {"loss": dev_loss}, prefix="dev")
      history.append({"step": done, "dev_loss": dev_loss})
      if dev_loss < best_dev_loss:
        best_dev_loss = dev_loss
        checkpointing.save(best, done, {"params": state["params"]}, run_manifest(done, dev_loss=dev_loss))
    if done % config.checkpoint_every == 0 or done == config.steps:
      checkpointing.save(checkpoints, done, state, run_manifest(done))
    progress.update(1)
  progress.close()
  logger.close()
  if not dev_batches and end == config.steps:
    checkpointing.save(best, end, {"params": state["params"]}, run_manifest(end))
  return TrainResult(state, best_dev_loss, first_dev_loss, resumed_from, history)
