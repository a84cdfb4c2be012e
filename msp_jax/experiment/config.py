"""What `msp experiment` runs: the matrix domains x methods x generation seeds x downstream repeats, as one
frozen dataclass (gin binds it as `msp.experiment_matrix` in `msp_jax/commands/experiment.py`), and the cells
it expands to.

Methods (each downstream model is trained on seed + its synthetic set of the same size, except seed only):

  seed_only        the seed set alone
  eda              seed + EDA copies (`evaluation.eda`), label-preserving
  in_context       seed + the frozen backbone's generations from the same template and exemplars, with the
                   instruction as hard tokens and no trained soft prompt (the paper's in-context baseline)
  prompt_tuning    seed + generations from one trained soft prompt for the whole domain, no attribute prompts
                   (the paper's PT baseline)
  msp              seed + MSP (attribute prompts + the mixer of `MixtureConfig.mixer`)
  msp_consistency  msp's candidates after the denoiser, less those whose labels a task model trained on the
                   seeds alone contradicts, filled to the target from the next-best candidates
  msp_noise_filter msp's candidates after the denoiser, less those with a sign of label noise readable without
                   a model (`synthesis.label_noise.is_noisy`: template markup in the text, a span that is a
                   pronoun or a label's name), filled to the target from the next-best candidates
  msp_span_completion  msp's kept set with the spans the seeds-only task model finds where the generator wrote
                   none added (`label_checks.complete_spans`): every generated label stays, unlabelled entities
                   and slots get one
  msp_rebalanced   msp's prompts (trained once, in the msp cell), sampled with the requests rebalanced towards
                   seeds carrying rare labels (`GenerationSettings.rebalance = True`; off by default), denoised
                   as msp is: the synthetic set no longer follows the seeds' label distribution

The three generators share the backbone, the sampling settings and the denoiser. The ablations run on
`ablation_domain` only, after every domain's main cells: first the methods of `ablation_methods` (settings
studies such as msp_rebalanced), then an msp cell per mixer in `ablation_mixers` (the msp cell of the same
mixer is shared).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

from msp_jax.errors import ConfigError
from msp_jax.tuning.mixers import MIXERS

(SEED_ONLY, EDA, IN_CONTEXT, PROMPT_TUNING, MSP, MSP_CONSISTENCY, MSP_NOISE_FILTER, MSP_SPAN_COMPLETION,
 MSP_REBALANCED) = ("seed_only", "eda", "in_context", "prompt_tuning", "msp", "msp_consistency", "msp_noise_filter",
                    "msp_span_completion", "msp_rebalanced")
METHODS = (SEED_ONLY, EDA, IN_CONTEXT, PROMPT_TUNING, MSP, MSP_CONSISTENCY, MSP_NOISE_FILTER, MSP_SPAN_COMPLETION,
           MSP_REBALANCED)
# Post-process the msp cell of their mixer and generation seed (a filter, or span completion).
MSP_FILTERS = (MSP_CONSISTENCY, MSP_NOISE_FILTER, MSP_SPAN_COMPLETION)
# Differ from msp in one respect and are compared with it as well as with the baselines.
MSP_VARIANTS = (*MSP_FILTERS, MSP_REBALANCED)
MSP_METHODS = (MSP, *MSP_VARIANTS)                             # run with the experiment's mixer
GENERATED = (IN_CONTEXT, PROMPT_TUNING, *MSP_METHODS)          # one cell per generation seed
TRAINED_PROMPTS = (PROMPT_TUNING, *MSP_METHODS)                # need a trained prompt checkpoint
TITLES = {SEED_ONLY: "seed only", EDA: "seed + EDA", IN_CONTEXT: "seed + in-context", PROMPT_TUNING:
          "seed + prompt tuning", MSP: "seed + MSP", MSP_CONSISTENCY: "seed + MSP + consistency",
          MSP_NOISE_FILTER: "seed + MSP + noise filter", MSP_SPAN_COMPLETION: "seed + MSP + span completion",
          MSP_REBALANCED: "seed + MSP, rebalanced"}


@dataclasses.dataclass(frozen=True)
class MatrixConfig:
  """The experiment matrix and the settings the run config (`msp_jax.run.config.RunConfig`) does not hold."""

  workdir: str = "experiments/paper_cpu"
  domains: tuple[str, ...] = ("nlupp_hotels", "crossner_music", "topv2_weather")
  methods: tuple[str, ...] = METHODS
  generation_seeds: tuple[int, ...] = (0, 1)
  repeats: int = 3                       # downstream task-model seeds per cell
  synthetic_ratio: float = 4.0           # synthetic examples per seed example (the authors keep 4x)
  ablation_domain: str | None = None     # a domain of `domains`; None: no mixer ablation
  ablation_mixers: tuple[str, ...] = tuple(MIXERS)
  ablation_methods: tuple[str, ...] = ()  # run on ablation_domain only, before the mixers (module docstring)
  prompt_tuning_length: int | None = None  # PT's soft prompt; None: prefix + attribute length of MSP's prompts
  # Per-domain padded sizes {domain: (max_text_len, max_target_len)} replacing `InputShapes`' for that domain's
  # cells (attention cost grows with their sum, and domains' serialised examples differ 3x in length); sampling
  # then stops after max_target_len new tokens, the longest target the prompts were trained on.
  domain_shapes: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  nlupp_seed_folds: tuple[int, ...] = (0, 1)
  nlupp_validation_folds: tuple[int, ...] = (19,)  # taken out of the test folds 2-19: selection never sees test
  max_seed_examples: int | None = None   # cap on the seed set (tiny runs); None: the protocol's whole seed set
  max_validation_examples: int | None = None
  max_oracle_examples: int = 3000        # the oracle's training set (every non-test example), sampled down to this
  bootstrap_samples: int = 1000
  bootstrap_seed: int = 0

  def __post_init__(self):
    for name in ("domains", "methods", "generation_seeds"):
      if not getattr(self, name):
        raise ConfigError(f"experiment_matrix.{name}: expected at least one")
    for name in ("methods", "ablation_methods"):
      for method in getattr(self, name):
        if method not in METHODS:
          raise ConfigError(f"experiment_matrix.{name}: unknown method {method!r}; expected one of "
                            f"{', '.join(METHODS)}")
    for mixer in self.ablation_mixers:
      if mixer not in MIXERS:
        raise ConfigError(f"experiment_matrix.ablation_mixers: unknown mixer {mixer!r}; expected one of "
                          f"{', '.join(MIXERS)}")
    if self.ablation_methods and self.ablation_domain is None:
      raise ConfigError(f"experiment_matrix.ablation_methods={list(self.ablation_methods)}: needs an "
                        "ablation_domain to run on")
    if self.ablation_domain is not None and self.ablation_domain not in self.domains:
      raise ConfigError(f"experiment_matrix.ablation_domain={self.ablation_domain!r}: expected one of the "
                        f"experiment's domains ({', '.join(self.domains)})")
    for name, shape in self.domain_shapes.items():
      if name not in self.domains:
        raise ConfigError(f"experiment_matrix.domain_shapes: {name!r} is not one of the experiment's domains "
                          f"({', '.join(self.domains)})")
      if (len(shape) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 8 for n in shape)):
        raise ConfigError(f"experiment_matrix.domain_shapes[{name!r}]={shape!r}: expected (max_text_len, "
                          "max_target_len), whole numbers >= 8")
    if len(set(self.generation_seeds)) != len(self.generation_seeds):
      raise ConfigError(f"experiment_matrix.generation_seeds={self.generation_seeds}: repeated seed")
    for name, minimum in (("repeats", 1), ("bootstrap_samples", 10), ("max_oracle_examples", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"experiment_matrix.{name}={value!r}: expected a whole number >= {minimum}")
    if not self.synthetic_ratio > 0:
      raise ConfigError(f"experiment_matrix.synthetic_ratio={self.synthetic_ratio}: expected > 0")
    if set(self.nlupp_validation_folds) & set(self.nlupp_seed_folds):
      raise ConfigError(f"experiment_matrix.nlupp_validation_folds={self.nlupp_validation_folds}: overlaps the "
                        f"seed folds {self.nlupp_seed_folds}")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of the matrix: a domain, a method (msp with its mixer), a generation seed (None: not generated)."""

  domain: str
  method: str
  mixer: str | None = None
  generation_seed: int | None = None

  @property
  def name(self) -> str:
    """'msp-attention' / 'eda': the method as the report and the folders name it."""
    return f"{self.method}-{self.mixer}" if self.mixer else self.method

  @property
  def relative_dir(self) -> str:
    """`cells/<domain>/<name>[/gen<seed>]` under the experiment's workdir."""
    tail = f"/gen{self.generation_seed}" if self.generation_seed is not None else ""
    return f"cells/{_safe(self.domain)}/{_safe(self.name)}{tail}"

  @property
  def generated(self) -> bool:
    return self.method in GENERATED


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def expand(matrix: MatrixConfig, msp_mixer: str) -> list[Cell]:
  """Every cell, in the order they run: per domain, the methods in the matrix's order (msp with `msp_mixer`;
  the msp filters after the msp cell they filter); then the ablation domain's `ablation_methods` and its other
  mixers, so an experiment split over sessions has every domain's main table before the ablations."""
  cells: list[Cell] = []

  def add(domain: str, method: str) -> None:
    if method not in GENERATED:
      cells.append(Cell(domain, method))
      return
    mixer = msp_mixer if method in MSP_METHODS else None
    if method in MSP_FILTERS:
      cells.extend(Cell(domain, MSP, msp_mixer, s) for s in matrix.generation_seeds)  # what it filters
    cells.extend(Cell(domain, method, mixer, s) for s in matrix.generation_seeds)

  for domain in matrix.domains:
    for method in matrix.methods:
      add(domain, method)
  for method in matrix.ablation_methods:
    add(matrix.ablation_domain, method)
  if matrix.ablation_domain is not None:
    cells.extend(Cell(matrix.ablation_domain, MSP, mixer, s) for mixer in matrix.ablation_mixers
                 if mixer != msp_mixer for s in matrix.generation_seeds)
  unique: dict[Cell, None] = dict.fromkeys(cells)
  return list(unique)
