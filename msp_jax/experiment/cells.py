"""A cell's workdir and its cached stages.

A generated cell (in_context, prompt_tuning, msp-<mixer>) is a `workflow.Run` workdir: its train (not for
in_context), generate and denoise stages are `Run`'s own, cached by their fingerprints. msp_consistency reads
the msp cell of the same mixer and generation seed and adds a `consistency` stage in its own folder. Every cell
then has the experiment's stages (`msp_jax.run.cache` records in `<cell>/stages/`):

  correctness   generated cells: the oracle model's predictions on the kept set (`label_checks.correctness`)
  task_models   the fine-tuned task model on seed (+ the cell's synthetic set), `repeats` seeds, scored on the
                test split; predictions under `<cell>/downstream/<method>/seed<k>/predictions.jsonl`

A cell's stage fingerprints cover the experiment's split of its domain (`domains.split_fingerprint`), so a
changed split or setting re-runs exactly the stages it affects.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax

from msp_jax.data.schema import DomainData
from msp_jax.experiment import config as cfg
from msp_jax.experiment.domains import ExperimentDomain
from msp_jax.run import cache, workflow
from msp_jax.run.setup import prompt_checkpoint_dir
from msp_jax.tuning.msp_model import NO_ATTRIBUTE_PROMPTS

CONSISTENCY, CORRECTNESS, TASK_MODELS = "consistency", "correctness", "task_models"
UNTRAINED = "untrained"  # the in-context cell's prompt checkpoint: none, the instruction's own embeddings


@dataclasses.dataclass(frozen=True)
class CellConfig(workflow.RunConfig):
  """A run config whose fingerprints also cover the experiment's split of the domain (which the catalog's task
  name does not say)."""

  split: str = ""  # cache.fingerprint of `domains.split_fingerprint`

  def train_fingerprint(self) -> str:
    return cache.fingerprint({"run": super().train_fingerprint(), "split": self.split})


class CellRun(workflow.Run):
  """`workflow.Run` on the experiment's split of the domain (not the catalog's); an in-context cell generates
  from untrained prompts: the instruction prefix initialised from the instruction's own token embeddings, i.e.
  the instruction as hard text (`MspModel.init`), and no attribute prompts."""

  def __init__(self, config: CellConfig, domain: DomainData, *, untrained: bool, **kwargs):
    super().__init__(config, **kwargs)
    self.domain = domain  # shadows Run's cached property
    self.untrained = untrained

  @functools.cached_property
  def prompts(self) -> tuple[Any, dict, pathlib.Path]:
    if not self.untrained:
      return super().prompts
    params = self.setup.model.init(jax.random.PRNGKey(self.config.training.seed), self.setup.frozen_params)
    return params, self.setup.manifest, self.config.workdir / UNTRAINED


def instruction_length(backbone: str) -> int:
  """Tokens of the instruction sentence under the backbone's tokenizer: the in-context cell's prefix length."""
  from msp_jax.backbones import load_backbone  # pylint: disable=g-import-not-at-top
  from msp_jax.tuning.msp_model import INSTRUCTION  # pylint: disable=g-import-not-at-top
  return len(load_backbone(backbone).backbone.tokenizer.encode(INSTRUCTION))


def target_count(matrix: cfg.MatrixConfig, domain: ExperimentDomain) -> int:
  """Synthetic examples per generated cell (and EDA copies): `synthetic_ratio` x the seed set, at least 1."""
  return max(1, round(matrix.synthetic_ratio * len(domain.seeds)))


def cell_config(base: workflow.RunConfig, cell: cfg.Cell, domain: ExperimentDomain, matrix: cfg.MatrixConfig,
                workdir: pathlib.Path, split: str, in_context_prefix: int | None = None) -> CellConfig:
  """The run config of a generated cell (msp_consistency: that of the msp cell it filters)."""
  mixture = base.mixture
  if cell.method in (cfg.MSP, cfg.MSP_CONSISTENCY):
    mixture = dataclasses.replace(mixture, mixer=cell.mixer)
  elif cell.method == cfg.PROMPT_TUNING:
    length = matrix.prompt_tuning_length or mixture.prefix_length + mixture.attribute_length
    mixture = dataclasses.replace(mixture, mixer=NO_ATTRIBUTE_PROMPTS, prefix_length=length)
  elif cell.method == cfg.IN_CONTEXT:
    mixture = dataclasses.replace(mixture, mixer=NO_ATTRIBUTE_PROMPTS, prefix_length=in_context_prefix)
  experiment = dataclasses.replace(base.experiment, workdir=str(workdir), task=cell.domain, few_shot=False,
                                   few_shot_k=None)
  generation = dataclasses.replace(base.generation, target_count=target_count(matrix, domain),
                                   seed=cell.generation_seed)
  fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(workflow.RunConfig)}
  fields.update(experiment=experiment, mixture=mixture, generation=generation, split=split)
  return CellConfig(**fields)


def source_cell(cell: cfg.Cell) -> cfg.Cell:
  """The cell whose Run stages a cell uses: msp_consistency filters the msp cell of its mixer and seed."""
  if cell.method == cfg.MSP_CONSISTENCY:
    return dataclasses.replace(cell, method=cfg.MSP)
  return cell


def run_stages(cell: cfg.Cell) -> tuple[str, ...]:
  """The `workflow.Run` stages a generated cell's source runs."""
  if cell.method == cfg.IN_CONTEXT:
    return ("generate", "denoise")
  return ("train", "generate", "denoise")


def experiment_stages(cell: cfg.Cell) -> tuple[str, ...]:
  """The experiment's own stages of a cell, in order."""
  if cell.method == cfg.MSP_CONSISTENCY:
    return (CONSISTENCY, CORRECTNESS, TASK_MODELS)
  if cell.generated:
    return (CORRECTNESS, TASK_MODELS)
  return (TASK_MODELS,)


def stage_seconds(workdir: pathlib.Path) -> dict[str, float | None]:
  """Wall time of every finished stage in a workdir (from its stage records)."""
  out = {}
  for stage in (*workflow.STAGES, CONSISTENCY, CORRECTNESS, TASK_MODELS):
    record = cache.read_record(workdir, stage)
    if record is not None:
      out[stage] = record.seconds
  return out


def has_prompts(workdir: pathlib.Path) -> bool:
  return prompt_checkpoint_dir(workdir).is_dir()
