"""The gin-configurable names of msp-jax. Library classes are registered here, at the edge, so the library
itself never imports gin. In a gin file: `TrainConfig.steps = 300`, `MixtureConfig.mixer = 'cnn'`, ...

`msp.experiment` is the `Experiment` dataclass itself (its fields and defaults are the bindable parameters);
the other groups default to `RunConfig`'s values, so each default is written once, in the library.

A group whose default is a config class instance (`prompt_training.config`, `GenerationSettings.sampling`, ...)
is bound to a gin reference of that class by `default_bindings()`, parsed before any gin file: otherwise gin
would hand over the fixed default instance and `msp.TrainConfig.steps = 2` would silently change nothing
unless a gin file first bound `msp.prompt_training.config = @msp.TrainConfig()`.
"""

from __future__ import annotations

import inspect

import gin

from msp_jax.evaluation.downstream import ClassifierConfig
from msp_jax.evaluation.task_models import TaskModelConfig
from msp_jax.run.setup import Experiment
from msp_jax.run.config import RunConfig
from msp_jax.synthesis.denoising import DenoiseWeights
from msp_jax.synthesis.generation import GenerationSettings, SamplingConfig
from msp_jax.tuning.model_inputs import InputShapes
from msp_jax.tuning.msp_model import MixtureConfig
from msp_jax.tuning.training import TrainConfig

# The library's config dataclasses, bindable as `msp.<ClassName>.<field>`.
CONFIG_CLASSES = (TrainConfig, MixtureConfig, InputShapes, GenerationSettings, SamplingConfig, DenoiseWeights,
                  ClassifierConfig, TaskModelConfig)
for _config_class in CONFIG_CLASSES:
  gin.external_configurable(_config_class, module="msp")
# Where a run writes, on what backbone and data it runs, and how devices are split.
experiment = gin.external_configurable(Experiment, name="experiment", module="msp")

_DEFAULTS = RunConfig()


@gin.configurable(module="msp")
def prompt_training(mixture: MixtureConfig = _DEFAULTS.mixture, shapes: InputShapes = _DEFAULTS.shapes,
                    config: TrainConfig = _DEFAULTS.training) -> dict:
  """The soft prompts, the padded input sizes and the optimisation of `msp train`."""
  return dict(mixture=mixture, shapes=shapes, training=config)


@gin.configurable(module="msp")
def synthesis(settings: GenerationSettings = _DEFAULTS.generation, weights: DenoiseWeights = _DEFAULTS.denoise_weights,
              synthetic_task: str | None = _DEFAULTS.synthetic_task,
              fill_to_target: bool = _DEFAULTS.fill_to_target,
              drop_label_noise: bool = _DEFAULTS.drop_label_noise) -> dict:
  """What `msp generate` / `msp denoise` / `msp run` make from trained prompts, and the SeqIO name of the set."""
  return dict(generation=settings, denoise_weights=weights, synthetic_task=synthetic_task,
              fill_to_target=fill_to_target, drop_label_noise=drop_label_noise)


@gin.configurable(module="msp")
def downstream_evaluation(model: str = _DEFAULTS.downstream_model, task_model: TaskModelConfig = _DEFAULTS.task_model,
                          classifier: ClassifierConfig = _DEFAULTS.classifier,
                          repeats: int = _DEFAULTS.downstream_repeats,
                          max_test_examples: int | None = _DEFAULTS.max_test_examples,
                          validation_split: str = _DEFAULTS.validation_split) -> dict:
  """The task model `msp downstream` trains on each training set ('fine_tuned', configured by `task_model`, or
  'frozen_embeddings', by `classifier`), how many seeds it averages over, how much of the test split it
  scores on (None: all of it), and the split the fine-tuned model is selected on."""
  return dict(downstream_model=model, task_model=task_model, classifier=classifier, downstream_repeats=repeats,
              max_test_examples=max_test_examples, validation_split=validation_split)


def default_bindings() -> list[str]:
  """`msp.<owner>.<parameter> = @msp.<Class>()` for every parameter (of a group above or of a config class)
  whose default is an instance of a config class, so bindings of that class's fields reach it.

  An unbound `@msp.<Class>()` builds the class's own default, which equals the fixed default it replaces, so
  a run's configuration (and its stage fingerprints) is unchanged where nothing is bound.
  """
  owners = [prompt_training, synthesis, downstream_evaluation, *CONFIG_CLASSES]
  bindings = []
  for owner in owners:
    for name, parameter in inspect.signature(owner).parameters.items():
      if type(parameter.default) in CONFIG_CLASSES:  # pylint: disable=unidiomatic-typecheck  (exact classes)
        bindings.append(f"msp.{owner.__name__}.{name} = @msp.{type(parameter.default).__name__}()")
  return bindings


def run_config() -> RunConfig:
  """The whole run as plain dataclasses, from the parsed gin configuration."""
  return RunConfig(experiment=experiment(), **prompt_training(), **synthesis(), **downstream_evaluation())
