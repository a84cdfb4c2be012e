"""A cell's workdir and its cached stages.

A generated cell (in_context, prompt_tuning, msp-<mixer>, msp_rebalanced-<mixer>) is a `workflow.Run` workdir:
its generate and denoise stages are `Run`'s own, cached by their fingerprints. Prompts are trained once per
method (and mixer), in the workdir of the first generation seed (`train_cell`); the other seeds, and
msp_rebalanced, sample from them. The msp filters
(msp_consistency, msp_noise_filter, msp_span_completion) read the msp cell of the same mixer and generation seed
and add their own stage (`FILTER_STAGES`: `consistency`, `noise_filter`, `span_completion`) in their folder.
Every cell then has the experiment's stages (`msp_jax.run.cache` records in `<cell>/stages/`):

  correctness   generated cells: the oracle model's predictions on the kept set (`label_checks.correctness`)
  task_models   the fine-tuned task model on seed (+ the cell's synthetic set), `repeats` seeds, scored on the
                test split; predictions under `<cell>/downstream/<method>/seed<k>/predictions.jsonl.gz`

Each domain also has an `oracle` folder (`oracle_cell`) with one stage, after the domain's main cells:

  oracle        the oracle model (the one `correctness` uses) scored on the real test split, with its
                predictions: what a task model trained on every non-test example reaches (a sanity figure
                for the task model), and how often it reproduces a real example's labels exactly (the
                reference a synthetic set's correctness is read against)

A cell's stage fingerprints cover the experiment's split of its domain (`domains.split_fingerprint`), so a
changed split or setting re-runs exactly the stages it affects.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax

from msp_jax.backbones.base import Backbone
from msp_jax.data.schema import DomainData
from msp_jax.experiment import config as cfg
from msp_jax.experiment.domains import ExperimentDomain
from msp_jax.run import cache, workflow
from msp_jax.run.config import RunConfig
from msp_jax.tuning.msp_model import INSTRUCTION, NO_ATTRIBUTE_PROMPTS

CONSISTENCY, NOISE_FILTER, SPAN_COMPLETION, CORRECTNESS, TASK_MODELS, ORACLE = (
    "consistency", "noise_filter", "span_completion", "correctness", "task_models", "oracle")
FILTER_STAGES = {cfg.MSP_CONSISTENCY: CONSISTENCY, cfg.MSP_NOISE_FILTER: NOISE_FILTER,  # an msp filter's stage
                 cfg.MSP_SPAN_COMPLETION: SPAN_COMPLETION}
UNTRAINED = "untrained"  # the in-context cell's prompt checkpoint: none, the instruction's own embeddings


@dataclasses.dataclass(frozen=True)
class CellConfig(RunConfig):
  """A run config whose fingerprints also cover the experiment's split of the domain (which the catalog's task
  name does not say)."""

  split: str = ""  # cache.fingerprint of `domains.split_fingerprint`

  def train_fingerprint(self) -> str:
    return cache.fingerprint({"run": super().train_fingerprint(), "split": self.split})


class CellRun(workflow.Run):
  """`workflow.Run` on the experiment's split of the domain (not the catalog's); an in-context cell generates
  from untrained prompts: the instruction prefix initialised from the instruction's own token embeddings, i.e.
  the instruction as hard text (`MspModel.init`), and no attribute prompts."""

  def __init__(self, config: CellConfig, domain: DomainData, *, untrained: bool,
               backbone: Callable[[], Backbone], prompts_workdir: pathlib.Path | None = None, **kwargs):
    super().__init__(config, **kwargs)
    self.domain = domain  # shadows Run's cached property
    self.untrained = untrained
    self._backbone = backbone  # the experiment's one frozen backbone (every cell shares its weights)
    self._prompts_workdir = prompts_workdir or config.workdir  # where the prompts it samples from are trained

  def shared_backbone(self) -> Backbone:
    return self._backbone()

  @property
  def prompts_workdir(self) -> pathlib.Path:
    return self._prompts_workdir

  @functools.cached_property
  def prompts(self) -> tuple[Any, dict, pathlib.Path]:
    if not self.untrained:
      return super().prompts
    params = self.setup.model.init(jax.random.PRNGKey(self.config.training.seed), self.setup.frozen_params)
    return params, self.setup.manifest, self.config.workdir / UNTRAINED


def instruction_length(backbone: Backbone) -> int:
  """Tokens of the instruction sentence under the backbone's tokenizer: the in-context cell's prefix length."""
  return len(backbone.tokenizer.encode(INSTRUCTION))


def target_count(matrix: cfg.MatrixConfig, domain: ExperimentDomain) -> int:
  """Synthetic examples per generated cell (and EDA copies): `synthetic_ratio` x the seed set, at least 1."""
  return max(1, round(matrix.synthetic_ratio * len(domain.seeds)))


def cell_config(base: RunConfig, cell: cfg.Cell, domain: ExperimentDomain, matrix: cfg.MatrixConfig,
                workdir: pathlib.Path, split: str, in_context_prefix: int | None = None) -> CellConfig:
  """The run config of a generated cell (an msp filter: that of the msp cell it filters)."""
  mixture = base.mixture
  if cell.method in cfg.MSP_METHODS:
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
  if cell.method == cfg.MSP_REBALANCED:
    generation = dataclasses.replace(generation, rebalance=True)
  shapes = base.shapes
  if cell.domain in matrix.domain_shapes:
    text_len, target_len = matrix.domain_shapes[cell.domain]
    shapes = dataclasses.replace(shapes, max_text_len=text_len, max_target_len=target_len)
    sampling = dataclasses.replace(generation.sampling, max_new_tokens=target_len)
    generation = dataclasses.replace(generation, sampling=sampling)
  fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(RunConfig)}
  fields.update(experiment=experiment, mixture=mixture, shapes=shapes, generation=generation, split=split)
  return CellConfig(**fields)


def source_cell(cell: cfg.Cell) -> cfg.Cell:
  """The cell whose Run stages a cell uses: an msp filter filters the msp cell of its mixer and seed."""
  if cell.method in cfg.MSP_FILTERS:
    return dataclasses.replace(cell, method=cfg.MSP)
  return cell


def train_cell(cell: cfg.Cell, matrix: cfg.MatrixConfig) -> cfg.Cell | None:
  """The cell whose workdir trains the prompts a generated cell samples from: that of the first generation
  seed (the generation seeds of a method share its prompts and differ in sampling; msp_rebalanced samples
  from msp's); None for in_context."""
  source = source_cell(cell)
  if source.method not in cfg.TRAINED_PROMPTS:
    return None
  method = cfg.MSP if source.method == cfg.MSP_REBALANCED else source.method
  return dataclasses.replace(source, method=method, generation_seed=matrix.generation_seeds[0])


def run_stages(cell: cfg.Cell, matrix: cfg.MatrixConfig) -> tuple[str, ...]:
  """The `workflow.Run` stages a generated cell's source runs in its own workdir."""
  if train_cell(cell, matrix) == source_cell(cell):
    return ("train", "generate", "denoise")
  return ("generate", "denoise")


def experiment_stages(cell: cfg.Cell) -> tuple[str, ...]:
  """The experiment's own stages of a cell, in order."""
  if cell.method in FILTER_STAGES:
    return (FILTER_STAGES[cell.method], CORRECTNESS, TASK_MODELS)
  if cell.generated:
    return (CORRECTNESS, TASK_MODELS)
  return (TASK_MODELS,)


def oracle_cell(domain: str) -> cfg.Cell:
  """The folder of a domain's oracle reference (`cells/<domain>/oracle`, stage `ORACLE`): not a method of the
  matrix, so never a row of its tables."""
  return cfg.Cell(domain, ORACLE)


def stage_seconds(workdir: pathlib.Path) -> dict[str, float | None]:
  """Wall time of every finished stage in a workdir (from its stage records)."""
  out = {}
  for stage in (*workflow.STAGES, *FILTER_STAGES.values(), CORRECTNESS, TASK_MODELS, ORACLE):
    record = cache.read_record(workdir, stage)
    if record is not None:
      out[stage] = record.seconds
  return out
