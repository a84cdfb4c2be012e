"""`msp run`: train -> generate -> denoise + export -> downstream in one workdir, each stage cached
(`msp_jax.run.cache`).

  <workdir>/checkpoints/, best/     prompt training (Orbax; best/ is the exported prompt checkpoint)
  <workdir>/tensorboard/            training scalars
  <workdir>/generated/candidates.jsonl, plan.json     every parsed generation + the per-seed keep quotas
  <workdir>/synthetic/synthetic.jsonl, .tfrecord      the kept, scored synthetic examples
  <workdir>/synthetic/seeds.jsonl                     the seed set they were generated from
  <workdir>/synthetic/metrics.json                    generated-data metrics (`msp_jax.synthesis.synthetic_metrics`)
  <workdir>/downstream/report.json                    task model trained on seed / seed + EDA / seed + MSP,
                                                      scored on the test split (`msp_jax.evaluation.compare`)
  <workdir>/downstream/<set>/seed<k>/predictions.jsonl   each fine-tuned model's test predictions
  <workdir>/stages/<stage>.json                       finished-stage records (what makes re-runs skip); their
                                                      summaries are `msp_jax.run.summaries`

The denoise stage hands the exported set to a `publish` function when one is given: the command layer passes
one that registers the set's SeqIO tasks and its `$MSP_HOME/synthetic/<name>.json` pointer (`tasks.synthetic`),
and the stage records the names it was published under.

Everything here takes plain arguments; gin binds them in `msp_jax/commands`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from typing import Any, Callable, Collection, Sequence, TypeVar

import jax

from msp_jax import distributed, files
from msp_jax.backbones.base import Backbone
from msp_jax.data import catalog
from msp_jax.data.registry import SyntheticSet
from msp_jax.data.schema import DomainData, Example
from msp_jax.errors import ConfigError, DataError
from msp_jax.evaluation import baselines, compare, downstream
from msp_jax.run import cache, checks
from msp_jax.run.checks import FINE_TUNED, FROZEN_EMBEDDINGS
from msp_jax.run.config import RunConfig
from msp_jax.run.setup import (Setup, load_prompts, load_setup, prompt_checkpoint_dir, seed_examples,
                               train_prompts)
from msp_jax.run.summaries import (DenoiseSummary, DownstreamSummary, GenerateSummary, SyntheticFiles,
                                   TrainSummary)
from msp_jax.synthesis import denoising, export, generation, label_noise, planning, synthetic_metrics
from msp_jax.tuning import model_inputs

SYNTHETIC_DIR = "synthetic"
GENERATED_DIR = "generated"
DOWNSTREAM_DIR = "downstream"
STAGES = ("train", "generate", "denoise", "downstream")  # in the order `msp run` runs them
# Who runs a stage in a multi-process run (`Run._stage`).
EACH, SHARED, COORDINATOR = "each", "shared", "coordinator"

# Makes an exported synthetic set visible by name (SeqIO tasks, registry pointer); returns the names.
Publish = Callable[[SyntheticSet], Sequence[str]]
Summary = TypeVar("Summary", TrainSummary, GenerateSummary, DenoiseSummary, DownstreamSummary)


class Run:
  """One workdir's stages, sharing a lazily loaded setup (the backbone is read once per process)."""

  def __init__(self, config: RunConfig, *, show_progress: bool = True, report: Callable[[str], None] = print):
    self.config = config
    self.show_progress = show_progress
    self.report = report

  @functools.cached_property
  def domain(self) -> DomainData:
    """The run's domain (ontology and splits), read once for the checks, the setup and the downstream stage."""
    return catalog.load_task_data(self.config.experiment.task, self.config.experiment.data_dir)

  def shared_backbone(self) -> Backbone | None:
    """A frozen backbone already loaded in this process to use instead of loading `experiment.backbone`
    (None here: every `msp` command runs one workdir; the experiment's cells share one)."""
    return None

  @property
  def prompts_workdir(self) -> pathlib.Path:
    """The workdir whose trained prompts this run samples from (its own)."""
    return self.config.workdir

  @functools.cached_property
  def setup(self) -> Setup:
    c = self.config
    return load_setup(c.experiment, mixture=c.mixture, shapes=c.shapes, seed=c.training.seed, domain=self.domain,
                      backbone=self.shared_backbone())

  @functools.cached_property
  def prompts(self) -> tuple[Any, dict, pathlib.Path]:
    """(soft params, manifest, checkpoint step folder) of the trained prompts."""
    checkpoint = prompt_checkpoint_dir(self.prompts_workdir)
    if not checkpoint.is_dir():
      raise ConfigError(f"{checkpoint}: no trained prompts in this workdir; run `msp train` (or `msp run`) with "
                        "the same gin file first")
    return load_prompts(self.setup, checkpoint)

  def check(self, stages: Collection[str] = STAGES, force: bool = False) -> None:
    """Every setting, before the first of `stages` (the stages the command runs, `force`d or not) runs, so a bad
    one costs neither hours of training nor a finished stage.

    The plain values first (`checks.check_settings`, no data read); then what only the domain can check: the
    requested combinations, and that every seed and dev example fits the mixer (`max_attributes`; training
    would meet a misfit only when its batch comes up). When the generate stage is among `stages` and still to
    run, its plan too: every request fits the mixer and, sampling constrained, `max_new_tokens` holds its
    shortest output. The plan needs the backbone's tokenizer, so it loads the setup that generation loads anyway.
    """
    c = self.config
    checks.check_settings(c)
    ontology = self.domain.ontology
    planning.check_combinations(c.generation.combinations, ontology)
    e = c.experiment
    examples = (*seed_examples(self.domain, e.few_shot, e.few_shot_k, c.training.seed),
                *self.domain.splits.get("validation", ())[:e.max_dev_examples])
    for example in examples:
      model_inputs.attribute_row_ids(example.attributes, ontology, c.mixture.max_attributes,
                                     where=f"example {example.uid}")
    if "downstream" in stages and c.downstream_model == FINE_TUNED:
      self.selection_examples(())  # the validation split exists
    if "generate" in stages and (force or cache.cached_record(c.workdir, "generate", c.generate_fingerprint())
                                 is None):
      self._check_generation_plan()

  def _check_generation_plan(self) -> None:
    sampling, setup = self.config.generation.sampling, self.setup
    backbone, ontology = setup.model.backbone, setup.domain.ontology
    if sampling.top_k > backbone.vocab_size:
      raise ConfigError(f"SamplingConfig.top_k={sampling.top_k}: expected at most the backbone's vocabulary size "
                        f"{backbone.vocab_size} (0 turns top-k filtering off)")
    requests, _ = self._generation_plan()
    for request in requests:
      where = f"generation request {list(request.attributes)} (seed {request.seed_uid!r})"
      model_inputs.attribute_row_ids(request.attributes, ontology, setup.shapes.max_attributes, where=where)
    if sampling.constrained:
      generation.request_grammars(backbone, ontology, requests, sampling)

  def _generation_plan(self) -> tuple[list[planning.GenerationRequest], dict[str, int]]:
    """(requests, keep per seed) of the generate stage (`planning.plan_generation`)."""
    settings, setup = self.config.generation, self.setup
    return planning.plan_generation(
        setup.seeds, setup.domain.ontology, target_count=settings.target_count, ratio=settings.ratio,
        rebalance=settings.rebalance, novel_combinations=settings.novel_combinations, seed=settings.seed,
        combinations=settings.combinations)

  def _stage(self, name: str, fingerprint: str, summary_type: type[Summary],
             compute: Callable[[], tuple[Summary, Sequence[pathlib.Path]]], force: bool,
             processes: str = EACH) -> Summary:
    """Runs a stage through the cache (`cache.run_stage`) and reads its summary back typed.

    In a multi-process run `processes` says who runs it:
      EACH: every process runs it as if alone (training: its steps are one program over all processes).
      SHARED: every process runs `compute`, which does its share of the work and writes files only on the
        coordinator (generation: each process samples 1/N of the batches).
      COORDINATOR: the coordinator (process 0) alone runs it; the others wait.
    With SHARED and COORDINATOR only the coordinator writes the stage record; the others wait at a barrier until
    it has, then read it back (`cache.run_stage_coordinated`).
    """
    def compute_json():
      summary, outputs = compute()
      return summary.to_json(), outputs
    workdir = self.config.workdir
    if processes == EACH or jax.process_count() == 1:
      record = cache.run_stage(workdir, name, fingerprint, compute_json, force=force, report=self.report)
    else:
      record = cache.run_stage_coordinated(workdir, name, fingerprint, compute_json, force=force,
                                           everyone_computes=processes == SHARED, report=self.report)
    return _typed(record, summary_type, workdir)

  def _finished(self, stage: str, fingerprint: str, summary_type: type[Summary], missing: str) -> Summary:
    """The summary of an earlier stage this configuration finished; ConfigError naming what to run if not."""
    record = cache.read_record(self.config.workdir, stage)
    if record is None or record.fingerprint != fingerprint:
      raise ConfigError(f"{self.config.workdir}: {missing} for this configuration yet; run `msp {stage}` (or "
                        "`msp run`) with the same gin file first")
    return _typed(record, summary_type, self.config.workdir)

  # ------------------------------------------------------------------------------------------- train
  def train(self, force: bool = False) -> TrainSummary:
    def compute():
      e = self.config.experiment
      result = train_prompts(self.setup, workdir=self.config.workdir, config=self.config.training,
                             max_dev_examples=e.max_dev_examples, num_model=e.num_model,
                             show_progress=self.show_progress)
      summary = TrainSummary(steps=int(result.state["step"]), resumed_from=result.resumed_from,
                             first_dev_loss=_finite(result.first_dev_loss),
                             best_dev_loss=_finite(result.best_dev_loss), seed_examples=len(self.setup.seeds))
      return summary, [prompt_checkpoint_dir(self.config.workdir)]
    return self._stage("train", self.config.train_fingerprint(), TrainSummary, compute, force)

  # ---------------------------------------------------------------------------------------- generate
  def generate(self, force: bool = False) -> GenerateSummary:
    out = self.config.workdir / GENERATED_DIR

    def compute():
      settings, setup = self.config.generation, self.setup
      soft_params, _, checkpoint = self.prompts
      requests, keep = self._generation_plan()
      result = generation.generate(
          setup.model, soft_params, setup.frozen_params, requests, setup.seeds, shapes=setup.shapes,
          sampling=settings.sampling, label_mode=settings.label_mode, rng=jax.random.PRNGKey(settings.seed),
          show_progress=self.show_progress)
      plan = {"keep_per_seed": keep, "requests": len(requests),
              "novel_requests": sum(r.count for r in requests if r.novel), "prompt_checkpoint": str(checkpoint)}
      if distributed.is_coordinator():  # every process holds the gathered result; one writes it
        generation.write_candidates(out / "candidates.jsonl", result.candidates)
        files.atomic_write_text(out / "plan.json", json.dumps(plan, indent=2) + "\n")
      summary = GenerateSummary(
          generated=result.generated, candidates=len(result.candidates), dropped=result.dropped,
          outcomes=result.outcomes, novel_generated=plan["novel_requests"],
          novel_candidates=sum(1 for c in result.candidates if c.novel), prompt_checkpoint=str(checkpoint))
      return summary, [out / "candidates.jsonl", out / "plan.json"]
    return self._stage("generate", self.config.generate_fingerprint(), GenerateSummary, compute, force, SHARED)

  # ----------------------------------------------------------------------------------------- denoise
  def denoise(self, force: bool = False, publish: Publish | None = None) -> DenoiseSummary:
    """Scores and filters the candidates, exports the kept set and its metrics; `publish` (when given) makes the
    exported set visible by name and its names go into the stage record."""
    out = self.config.workdir / SYNTHETIC_DIR

    def compute():
      generated = self._finished("generate", self.config.generate_fingerprint(), GenerateSummary, "no generation")
      result, records = self._denoise_candidates()
      exported = export_synthetic(out, records, self.setup.seeds)
      metrics = self._write_metrics(out / "metrics.json", result, generated)
      published = tuple(publish(self.synthetic_set(exported))) if publish is not None else ()
      summary = DenoiseSummary(kept=len(records), metrics=metrics, files=exported,
                               metrics_file=str(out / "metrics.json"), seqio_tasks=published)
      return summary, [exported.jsonl, exported.tfrecord, exported.seeds, out / "metrics.json"]
    return self._stage("denoise", self.config.denoise_fingerprint(), DenoiseSummary, compute, force, COORDINATOR)

  def denoise_result(self) -> tuple[list[generation.Candidate], dict[str, Any], denoising.DenoiseResult]:
    """(the generated candidates the denoiser saw, the generation plan, its result on them against the seed
    set). With `drop_label_noise` the noisy candidates are left out first and counted in the summary."""
    from msp_jax.encoders import SentenceEncoder  # pylint: disable=g-import-not-at-top  (loads the MiniLM wheel)

    generated_dir = self.config.workdir / GENERATED_DIR
    candidates = generation.read_candidates(generated_dir / "candidates.jsonl")
    plan = json.loads((generated_dir / "plan.json").read_text(encoding="utf-8"))
    setup, settings = self.setup, self.config.generation
    noisy = 0
    if self.config.drop_label_noise:
      names = setup.domain.ontology.names
      clean = [c for c in candidates if not label_noise.is_noisy(c.example, names)]
      candidates, noisy = clean, len(candidates) - len(clean)
    result = denoising.denoise(candidates, setup.seeds, encoder=SentenceEncoder(), ontology=setup.domain.ontology,
                               keep_per_seed=plan["keep_per_seed"], target_count=settings.target_count,
                               weights=self.config.denoise_weights, fill_to_target=self.config.fill_to_target)
    if self.config.drop_label_noise:
      summary = dict(result.summary)
      summary["candidates"] = int(summary["candidates"]) + noisy
      summary["dropped"] = {**summary["dropped"], "label_noise": noisy}
      result = dataclasses.replace(result, summary=summary)
    return candidates, plan, result

  def _denoise_candidates(self) -> tuple[denoising.DenoiseResult, list[export.SyntheticRecord]]:
    """The generated candidates scored against the seed set and filtered, as records with their provenance."""
    _, plan, result = self.denoise_result()
    setup, settings = self.setup, self.config.generation
    provenance = {"backbone": setup.backbone_spec, "prompt_checkpoint": plan["prompt_checkpoint"],
                  "seed": settings.seed}
    records = [export.SyntheticRecord(c.example, s, c.seed_uid, c.novel, provenance)
               for c, s in zip(result.kept, result.kept_scores)]
    return result, records

  def _write_metrics(self, path: pathlib.Path, result: denoising.DenoiseResult,
                     generated: GenerateSummary) -> dict[str, Any]:
    """metrics.json: the generated and kept sets' metrics, plus what denoising and generation dropped."""
    setup = self.setup
    metrics = synthetic_metrics.synthetic_set_metrics(
        outcomes=generated.outcomes, kept=[c.example for c in result.kept],
        kept_requested=[c.requested for c in result.kept], seeds=setup.seeds, ontology=setup.domain.ontology,
        backbone=setup.model.backbone, params=setup.frozen_params, seed=self.config.generation.seed)
    metrics["denoise"] = {**result.summary, "novel_kept": sum(1 for c in result.kept if c.novel),
                          "novel_generated": generated.novel_generated,
                          "novel_candidates": generated.novel_candidates}
    metrics["generation_dropped"] = generated.dropped
    files.atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return metrics

  def synthetic_set(self, exported: SyntheticFiles) -> SyntheticSet:
    """The exported set as the catalog registers it: named `synthetic_task_name`, labelled like the run's task."""
    e = self.config.experiment
    return SyntheticSet(name=self.config.synthetic_task_name, records=pathlib.Path(exported.jsonl),
                        seeds=pathlib.Path(exported.seeds), source_task=e.task,
                        task_kind=self.domain.ontology.task, data_dir=e.data_dir)

  # -------------------------------------------------------------------------------------- downstream
  def downstream_skip_reason(self) -> str | None:
    """Why `msp run` leaves the downstream stage out for this domain (no task model for its kind), or None."""
    if self.config.downstream_model == FROZEN_EMBEDDINGS:
      return downstream.unsupported_reason(self.domain.ontology)
    return None

  def denoised(self) -> DenoiseSummary:
    """The summary of the denoise stage this configuration finished; ConfigError naming what to run if none."""
    return self._finished("denoise", self.config.denoise_fingerprint(), DenoiseSummary, "no denoised synthetic set")

  def selection_examples(self, test: Sequence[Example]) -> list[Example]:
    """The `validation_split` examples the fine-tuned model is selected on, less any test example (NLU++'s
    reader scores on its validation folds: selecting on them would tune to the test set). Empty (train to
    the last epoch) when nothing is left; ConfigError for a split the domain lacks."""
    name = self.config.validation_split
    if name not in self.domain.splits:
      raise ConfigError(f"downstream_evaluation.validation_split={name!r}: domain {self.domain.name!r} has splits "
                        f"{', '.join(sorted(self.domain.splits))}")
    test_uids = {e.uid for e in test}
    return [e for e in self.domain.splits[name] if e.uid not in test_uids]

  def downstream(self, force: bool = False) -> DownstreamSummary:
    out = self.config.workdir / DOWNSTREAM_DIR

    def compute():
      c = self.config
      denoised = self._finished("denoise", c.denoise_fingerprint(), DenoiseSummary, "no denoised synthetic set")
      seeds = export.read_examples(denoised.files.seeds)
      synthetic = [r.example for r in export.read_jsonl(denoised.files.jsonl)]
      test = list(self.domain.splits.get("test", ()))[:c.max_test_examples]
      if c.downstream_model == FROZEN_EMBEDDINGS:
        from msp_jax.encoders import SentenceEncoder  # pylint: disable=g-import-not-at-top  (loads the MiniLM wheel)
        report = downstream.compare_training_sets(
            baselines.training_sets(seeds, synthetic, seed=c.classifier.seed), test, self.domain.ontology,
            SentenceEncoder(), c.classifier, c.downstream_repeats)
        outputs = []
      else:
        report = compare.compare_training_sets(
            baselines.training_sets(seeds, synthetic, seed=c.task_model.seed), self.selection_examples(test), test,
            self.domain.ontology, c.task_model, c.downstream_repeats, out_dir=out)
        outputs = [out / run["predictions"] for row in report["sets"].values() for run in row["runs"]]
      report = {"model_kind": c.downstream_model, **report}
      report_file = compare.write_report(out, report)
      return DownstreamSummary(report=report, report_file=str(report_file)), [report_file, *outputs]
    return self._stage("downstream", self.config.downstream_fingerprint(), DownstreamSummary, compute, force,
                       COORDINATOR)  # task models train on one device: one process is enough


def export_synthetic(out: pathlib.Path, records: Sequence[export.SyntheticRecord],
                     seeds: Sequence[Example]) -> SyntheticFiles:
  """Writes the kept records (JSONL + TFRecord) and the seed set (JSONL), atomically; returns the paths."""
  exported = SyntheticFiles(jsonl=str(out / "synthetic.jsonl"), tfrecord=str(out / "synthetic.tfrecord"),
                            seeds=str(out / "seeds.jsonl"))
  export.write_jsonl(exported.jsonl, records)
  export.write_tfrecord(exported.tfrecord, records)
  files.write_jsonl_rows(exported.seeds, (export.example_to_dict(e) for e in seeds))
  return exported


def _typed(record: cache.StageRecord, summary_type: type[Summary], workdir: pathlib.Path) -> Summary:
  try:
    return summary_type.from_json(record.summary)
  except (KeyError, TypeError) as e:
    path = cache.record_path(workdir, record.stage)
    raise DataError(f"{path}: stage summary is not a {summary_type.__name__} ({type(e).__name__}: {e}); delete "
                    f"it to re-run stage {record.stage!r}") from None


def _finite(value: float) -> float | None:
  return value if math.isfinite(value) else None
