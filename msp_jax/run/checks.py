"""Checks of a run's settings that need neither data nor a model, made before any stage runs (`Run.check`), so a
bad setting is one line at the start rather than a failure after hours of training or after a stage has
rewritten its outputs.

The config classes check their own fields when built (`TrainConfig`, `MixtureConfig`, `GenerationSettings`,
...); what is here is what they leave to the step that uses it: the sampling values (checked by the decoder only
when generation starts), the padded sizes, the device split, the synthetic set's name (checked when the set is
published, after denoising has rewritten `synthetic/`) and the downstream settings.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import jax

from msp_jax import partitioning
from msp_jax.backbones.base import WEIGHT_DTYPES
from msp_jax.data import catalog
from msp_jax.errors import ConfigError

if TYPE_CHECKING:  # config imports this module
  from msp_jax.run.config import RunConfig

# The downstream task models a run can train: end-to-end fine-tuned MiniLM for every task kind
# (`evaluation.task_models`), or the fast classifier on frozen sentence embeddings, multi-intent domains only
# (`evaluation.downstream`).
FINE_TUNED, FROZEN_EMBEDDINGS = "fine_tuned", "frozen_embeddings"
DOWNSTREAM_MODELS = (FINE_TUNED, FROZEN_EMBEDDINGS)


def check_settings(config: RunConfig) -> None:
  """Raises ConfigError naming the first setting (`Class.field=value`) that no stage could run with."""
  e, shapes, sampling = config.experiment, config.shapes, config.generation.sampling
  _whole(e.max_dev_examples, "experiment.max_dev_examples", minimum=0)
  _whole(e.num_model, "experiment.num_model", minimum=1)
  _check_devices(e.num_model, config.training.batch_size)
  for field in ("max_text_len", "max_target_len"):
    _whole(getattr(shapes, field), f"InputShapes.{field}", minimum=1)
  _whole(sampling.max_new_tokens, "SamplingConfig.max_new_tokens", minimum=1)
  _whole(sampling.batch_size, "SamplingConfig.batch_size", minimum=1)
  _whole(sampling.top_k, "SamplingConfig.top_k", minimum=0, meaning="0 turns top-k filtering off")
  _positive(sampling.temperature, "SamplingConfig.temperature", "the logits are divided by it")
  _positive(sampling.repetition_penalty, "SamplingConfig.repetition_penalty", "1 turns it off")
  if not (_real(sampling.top_p) and 0 < sampling.top_p <= 1):
    raise ConfigError(f"SamplingConfig.top_p={sampling.top_p!r}: expected a probability in (0, 1] (1 turns "
                      "top-p filtering off)")
  if sampling.weights_dtype not in WEIGHT_DTYPES:
    raise ConfigError(f"SamplingConfig.weights_dtype={sampling.weights_dtype!r}: expected one of "
                      f"{', '.join(map(repr, WEIGHT_DTYPES))}")
  try:
    catalog.check_synthetic_name(config.synthetic_task_name)
  except ConfigError as error:
    raise ConfigError(f"synthetic_task: {error}") from None
  _whole(config.downstream_repeats, "downstream_evaluation.repeats", minimum=1)
  if config.max_test_examples is not None:
    _whole(config.max_test_examples, "downstream_evaluation.max_test_examples", minimum=1,
           meaning="None scores the whole test split")
  if config.downstream_model not in DOWNSTREAM_MODELS:
    raise ConfigError(f"downstream_evaluation.model={config.downstream_model!r}: expected one of "
                      f"{', '.join(map(repr, DOWNSTREAM_MODELS))}")


def _check_devices(num_model: int, batch_size: int) -> None:
  """Training shards each batch over the mesh's 'data' axis when there is more than one device (as
  `setup.train_prompts` builds it), so the batch size must split evenly over it."""
  if jax.device_count() == 1 and num_model == 1:
    return
  data_parallel = partitioning.make_mesh(num_model).shape["data"]  # ConfigError unless num_model divides
  if batch_size % data_parallel:
    raise ConfigError(f"TrainConfig.batch_size={batch_size} must be a multiple of the data-parallel size "
                      f"{data_parallel} ({jax.device_count()} devices / experiment.num_model={num_model})")


def _real(value: object) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object, name: str, *, minimum: int, meaning: str = "") -> None:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    note = f" ({meaning})" if meaning else ""
    raise ConfigError(f"{name}={value!r}: expected a whole number >= {minimum}{note}")


def _positive(value: object, name: str, meaning: str) -> None:
  if not (_real(value) and value > 0):
    raise ConfigError(f"{name}={value!r}: expected a number > 0 ({meaning})")
