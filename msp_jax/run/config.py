"""`RunConfig`: everything `msp run` needs, as one frozen dataclass (one gin file binds it through
`msp_jax/commands/configurables.py`), and the fingerprint of each stage's configuration: a stage re-runs when
the settings it reads change (`msp_jax.run.cache`)."""

from __future__ import annotations

import dataclasses
import pathlib

from msp_jax.config_fields import fingerprinted_fields, new_setting
from msp_jax.evaluation import downstream
from msp_jax.evaluation.task_models import TaskModelConfig
from msp_jax.run import cache
from msp_jax.run.checks import FINE_TUNED, FROZEN_EMBEDDINGS
from msp_jax.run.setup import Experiment
from msp_jax.synthesis import denoising, generation
from msp_jax.tuning.model_inputs import InputShapes
from msp_jax.tuning.msp_model import MixtureConfig
from msp_jax.tuning.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything `msp run` needs (one gin file binds it)."""

  experiment: Experiment = Experiment()
  mixture: MixtureConfig = MixtureConfig()
  shapes: InputShapes = InputShapes()
  training: TrainConfig = TrainConfig()
  generation: generation.GenerationSettings = generation.GenerationSettings()
  denoise_weights: denoising.DenoiseWeights = denoising.DenoiseWeights()
  synthetic_task: str | None = None  # SeqIO name of the synthetic set; default '<task>_synthetic'
  fill_to_target: bool = True  # top up to target_count beyond per-seed quotas (denoising.denoise)
  # Drop candidates with a sign of label noise (`synthesis.label_noise.is_noisy`: template markup in the text, a
  # span that is a pronoun or a label's name) before denoising; counted as dropped 'label_noise'.
  drop_label_noise: bool = new_setting(False)
  downstream_model: str = FINE_TUNED  # one of checks.DOWNSTREAM_MODELS
  task_model: TaskModelConfig = TaskModelConfig()  # the fine-tuned model's settings
  classifier: downstream.ClassifierConfig = downstream.ClassifierConfig()  # the frozen-embedding classifier's
  downstream_repeats: int = 3  # task-model seeds per training set
  max_test_examples: int | None = None  # score on the test split's first N examples (quick runs); None: all
  validation_split: str = "validation"  # the split the fine-tuned model is selected on (its test examples dropped)

  @property
  def workdir(self) -> pathlib.Path:
    return pathlib.Path(self.experiment.workdir)

  def train_fingerprint(self) -> str:
    experiment = {k: v for k, v in fingerprinted_fields(self.experiment).items() if k != "workdir"}
    return cache.fingerprint({"experiment": experiment, "mixture": self.mixture, "shapes": self.shapes,
                              "training": self.training})

  def generate_fingerprint(self) -> str:
    return cache.fingerprint({"train": self.train_fingerprint(), "generation": self.generation})

  def denoise_fingerprint(self) -> str:
    noise = {"drop_label_noise": True} if self.drop_label_noise else {}  # new_setting: absent at its default
    return cache.fingerprint({"generate": self.generate_fingerprint(), "weights": self.denoise_weights,
                              "fill_to_target": self.fill_to_target, "synthetic_task": self.synthetic_task_name,
                              **noise})

  def downstream_fingerprint(self) -> str:
    if self.downstream_model == FROZEN_EMBEDDINGS:
      model = {"classifier": self.classifier}
    else:
      model = {"model": self.downstream_model, "task_model": self.task_model, "validation": self.validation_split}
    return cache.fingerprint({"denoise": self.denoise_fingerprint(), **model, "repeats": self.downstream_repeats,
                              "max_test_examples": self.max_test_examples})

  @property
  def synthetic_task_name(self) -> str:
    return self.synthetic_task or f"{self.experiment.task}_synthetic"
