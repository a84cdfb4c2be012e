"""The gin-configurable names of msp-jax. Library classes are registered here, at the edge, so the library
itself never imports gin. In a gin file: `TrainConfig.steps = 300`, `MixtureConfig.mixer = 'cnn'`, ..."""

from __future__ import annotations

import gin

from msp_jax.denoising import DenoiseWeights
from msp_jax.downstream import ClassifierConfig
from msp_jax.generation import GenerationSettings, SamplingConfig
from msp_jax.model_inputs import InputShapes
from msp_jax.msp_model import MixtureConfig
from msp_jax.training import TrainConfig
from msp_jax.workflow import Experiment, RunConfig

gin.external_configurable(TrainConfig, module="msp")
gin.external_configurable(MixtureConfig, module="msp")
gin.external_configurable(InputShapes, module="msp")
gin.external_configurable(GenerationSettings, module="msp")
gin.external_configurable(SamplingConfig, module="msp")
gin.external_configurable(DenoiseWeights, module="msp")
gin.external_configurable(ClassifierConfig, module="msp")


@gin.configurable(module="msp")
def experiment(workdir: str = "msp_runs/quickstart", backbone: str = "smollm2-135m", task: str = "front_desk",
               data_dir: str | None = None, few_shot: bool = True, few_shot_k: int | None = None,
               max_dev_examples: int = 64, num_model: int = 1) -> dict:
  """Where a run writes, on what backbone and data it runs, and how devices are split."""
  return dict(workdir=workdir, backbone=backbone, task=task, data_dir=data_dir, few_shot=few_shot,
              few_shot_k=few_shot_k, max_dev_examples=max_dev_examples, num_model=num_model)


@gin.configurable(module="msp")
def prompt_training(mixture: MixtureConfig = MixtureConfig(), shapes: InputShapes = InputShapes(),
                    config: TrainConfig = TrainConfig()) -> dict:
  """The soft prompts, the padded input sizes and the optimisation of `msp train`."""
  return dict(mixture=mixture, shapes=shapes, config=config)


@gin.configurable(module="msp")
def synthesis(settings: GenerationSettings = GenerationSettings(), weights: DenoiseWeights = DenoiseWeights(),
              synthetic_task: str | None = None, fill_to_target: bool = True) -> dict:
  """What `msp generate` / `msp denoise` / `msp run` make from trained prompts, and the SeqIO name of the set."""
  return dict(generation=settings, denoise_weights=weights, synthetic_task=synthetic_task,
              fill_to_target=fill_to_target)


@gin.configurable(module="msp")
def downstream_evaluation(classifier: ClassifierConfig = ClassifierConfig(), repeats: int = 3) -> dict:
  """The task model `msp downstream` trains on each training set, and how many seeds it averages over."""
  return dict(classifier=classifier, downstream_repeats=repeats)


def run_config() -> RunConfig:
  """The whole run as plain dataclasses, from the parsed gin configuration."""
  training = prompt_training()
  return RunConfig(experiment=Experiment(**experiment()), mixture=training["mixture"], shapes=training["shapes"],
                   training=training["config"], **synthesis(), **downstream_evaluation())
