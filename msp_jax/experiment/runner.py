"""`msp experiment`: every cell of the matrix through its cached stages (`cells`), one progress bar over the
whole matrix, then `results.json` and the report (`results`, `report`).

  <workdir>/cells/<domain>/<method>[/gen<seed>]/   a cell (`cells` module docstring)
  <workdir>/experiment.log                         what each stage did (the bar shows only where it is)
  <workdir>/results.json, report.md, report.html   `results` and `report`

A killed experiment resumes: finished stages are skipped by their records, and the seed and oracle task models
are kept in `cells/<domain>/models` (`model_file`). Everything takes plain arguments. Just over 400 lines: each
stage sits beside the fingerprint of what it reads, and they are read together.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Sequence

from msp_jax import files
from msp_jax.backbones import load_backbone
from msp_jax.backbones.base import Backbone
from msp_jax.errors import ConfigError
from msp_jax.evaluation import compare, model_files, predictions, task_models
from msp_jax.evaluation.eda import eda_examples
from msp_jax.evaluation.heads import LabelSpace
from msp_jax.experiment import cells, label_checks
from msp_jax.experiment import config as cfg
from msp_jax.experiment.domains import ExperimentDomain, experiment_domain, split_fingerprint
from msp_jax.progress import Progress
from msp_jax.run import cache, workflow
from msp_jax.run.config import RunConfig
from msp_jax.synthesis import export, label_noise, synthetic_metrics

LOG_FILE = "experiment.log"
PREDICTIONS_FILE = "predictions.jsonl.gz"  # a run's test predictions, gzipped: the experiment commits them
MODELS_DIR = "models"  # cells/<domain>/models: the seed and oracle task models (not committed: ~90 MB each)


class ExperimentRunner:
  """Runs the matrix `matrix` with every cell's run settings taken from `base`."""

  def __init__(self, matrix: cfg.MatrixConfig, base: RunConfig, *, show_progress: bool = True,
               stage_hook: Callable[[cfg.Cell, str], None] | None = None):
    self.matrix, self.base = matrix, base
    self.root = pathlib.Path(matrix.workdir)
    self.show_progress = show_progress
    self.stage_hook = stage_hook  # called before each stage runs (tests interrupt a cell with it)
    self.cells = cfg.expand(matrix, base.mixture.mixer)
    self._domains: dict[str, ExperimentDomain] = {}
    self._runs: dict[cfg.Cell, cells.CellRun] = {}
    self._models: dict[tuple[str, str], task_models.TrainedModel] = {}
    self._encoder = None
    self._backbone: Backbone | None = None
    self._in_context_prefix: int | None = None

  # ------------------------------------------------------------------------------------------- setup
  def domain(self, name: str) -> ExperimentDomain:
    if name not in self._domains:
      self._domains[name] = experiment_domain(name, self.matrix, self.base.experiment.data_dir)
    return self._domains[name]

  def split(self, name: str) -> str:
    return cache.fingerprint(split_fingerprint(self.domain(name)))

  def cell_dir(self, cell: cfg.Cell) -> pathlib.Path:
    return self.root / cell.relative_dir

  def run_of(self, cell: cfg.Cell) -> cells.CellRun:
    """The `CellRun` of a generated cell's source (msp for the msp filters)."""
    source = cells.source_cell(cell)
    if source not in self._runs:
      prefix = None
      if source.method == cfg.IN_CONTEXT:
        if self._in_context_prefix is None:
          self._in_context_prefix = cells.instruction_length(self.backbone())
        prefix = self._in_context_prefix
      domain = self.domain(source.domain)
      config = cells.cell_config(self.base, source, domain, self.matrix, self.cell_dir(source),
                                 self.split(source.domain), prefix)
      where = source.relative_dir
      trainer = cells.train_cell(source, self.matrix)
      self._runs[source] = cells.CellRun(config, domain.data, untrained=source.method == cfg.IN_CONTEXT,
                                         backbone=self.backbone,
                                         prompts_workdir=self.cell_dir(trainer) if trainer else None,
                                         show_progress=False, report=lambda line: self.log(f"{where} {line}"))
    return self._runs[source]

  def backbone(self) -> Backbone:
    """The frozen backbone every cell shares, loaded once."""
    if self._backbone is None:
      self._backbone = load_backbone(self.base.experiment.backbone).backbone
    return self._backbone

  @property
  def encoder(self):
    if self._encoder is None:
      self._encoder = task_models.load_encoder(self.base.task_model.encoder)
    return self._encoder

  def log(self, line: str) -> None:
    self.root.mkdir(parents=True, exist_ok=True)
    with open(self.root / LOG_FILE, "a", encoding="utf-8") as f:
      f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

  def check(self) -> None:
    """Every domain loads and splits, and every generated cell's settings pass `Run.check`, before any stage."""
    for name in self.matrix.domains:
      self.domain(name)
    for cell in self.cells:
      if cell.generated:
        self.run_of(cell).check(cells.run_stages(cell, self.matrix))

  # ---------------------------------------------------------------------------------------- the matrix
  def plan(self) -> list[tuple[cfg.Cell, str]]:
    """(cell, stage) in the order they run: a method's prompts are trained (once, `cells.train_cell`), then
    each generation seed samples and denoises (`Run`'s stages, once per source) before the first experiment
    stage that reads them."""
    steps, last_domain = [], None
    for cell in self.cells:
      if cell.domain != last_domain and last_domain is not None:
        steps.append((cells.oracle_cell(last_domain), cells.ORACLE))  # after the domain's main cells
      last_domain = cell.domain
      if cell.generated:
        source, trainer = cells.source_cell(cell), cells.train_cell(cell, self.matrix)
        if trainer is not None:
          steps.append((trainer, "train"))
        steps.extend((source, stage) for stage in ("generate", "denoise"))
      steps.extend((cell, stage) for stage in cells.experiment_stages(cell))
    steps.append((cells.oracle_cell(last_domain), cells.ORACLE))
    return list(dict.fromkeys(steps))  # the ablation's domain keeps its first oracle step

  def reads(self, cell: cfg.Cell, stage: str) -> list[tuple[cfg.Cell, str]]:
    """The `Run` stages whose outputs a stage reads."""
    if stage == "train" or not cell.generated:
      return []
    source = cells.source_cell(cell)
    if stage == "generate":
      trainer = cells.train_cell(cell, self.matrix)
      return [(trainer, "train")] if trainer is not None else []
    if stage == "denoise":
      return [(source, "generate")]
    return [(source, "denoise")] + ([(source, "generate")] if stage in cells.FILTER_STAGES.values() else [])

  def pending(self) -> list[tuple[cfg.Cell, str]]:
    """The steps of `plan` still to run: every experiment stage not done, and the `Run` stages (not done) that a
    pending step reads. So a finished cell whose prompt checkpoint or candidates were not kept (a committed
    experiment) is not re-trained or re-sampled."""
    pending, wanted = [], set()
    for cell, stage in reversed(self.plan()):
      if stage in workflow.STAGES and (cell, stage) not in wanted:
        continue
      if self.is_done(cell, stage):
        continue
      pending.append((cell, stage))
      wanted.update(self.reads(cell, stage))
    return pending[::-1]

  def is_done(self, cell: cfg.Cell, stage: str) -> bool:
    return cache.cached_record(self.stage_dir(cell, stage), stage, self.fingerprint(cell, stage)) is not None

  def stage_dir(self, cell: cfg.Cell, stage: str) -> pathlib.Path:
    if stage == "train":
      return self.cell_dir(cells.train_cell(cell, self.matrix))
    return self.cell_dir(cells.source_cell(cell) if stage in workflow.STAGES else cell)

  def run(self) -> None:
    """Runs every pending stage, with one bar over the matrix (count, rate, ETA)."""
    self.check()
    steps, pending = self.plan(), self.pending()
    progress = Progress(total=len(steps), initial=len(steps) - len(pending), unit="stage", desc="experiment",
                        enabled=self.show_progress)
    try:
      for cell, stage in pending:
        progress.set_postfix(cell=f"{cell.domain}/{cell.relative_dir.split('/', 2)[2]}", stage=stage)
        progress.update(0)
        if self.stage_hook is not None:
          self.stage_hook(cell, stage)
        self.run_stage(cell, stage)
        progress.update(1)
    finally:
      progress.close()

  def run_stage(self, cell: cfg.Cell, stage: str):
    if stage == "train":
      return self.run_of(cells.train_cell(cell, self.matrix)).train()
    if stage == "generate":
      return self.run_of(cell).generate()
    if stage == "denoise":
      return self.run_of(cell).denoise()
    compute = {cells.CONSISTENCY: self._consistency, cells.NOISE_FILTER: self._noise_filter,
               cells.SPAN_COMPLETION: self._span_completion, cells.CORRECTNESS: self._correctness,
               cells.TASK_MODELS: self._task_models, cells.ORACLE: self._oracle_reference}[stage]
    return cache.run_stage(self.cell_dir(cell), stage, self.fingerprint(cell, stage), lambda: compute(cell),
                           report=lambda line: self.log(f"{cell.relative_dir} {line}"))

  # ------------------------------------------------------------------------------------ fingerprints
  def fingerprint(self, cell: cfg.Cell, stage: str) -> str:
    """The fingerprint of a stage of a cell: what it reads and every setting it uses."""
    if stage in workflow.STAGES:
      c = self.run_of(cell).config
      return {"train": c.train_fingerprint, "generate": c.generate_fingerprint,
              "denoise": c.denoise_fingerprint}[stage]()
    if stage == cells.CONSISTENCY:
      return cache.fingerprint({"denoise": self.fingerprint(cell, "denoise"), "seed_model": self._model_settings()})
    if stage == cells.NOISE_FILTER:
      return cache.fingerprint({"denoise": self.fingerprint(cell, "denoise"), "filter": label_noise.FILTER_VERSION})
    if stage == cells.SPAN_COMPLETION:
      return cache.fingerprint({"denoise": self.fingerprint(cell, "denoise"), "seed_model": self._model_settings(),
                                "completion": "non-overlapping seed-model spans"})
    if stage == cells.CORRECTNESS:
      return cache.fingerprint({"synthetic": self.synthetic_fingerprint(cell), "oracle": self._model_settings(),
                                "max_oracle_examples": self.matrix.max_oracle_examples})
    if stage == cells.ORACLE:
      return cache.fingerprint({"split": self.split(cell.domain), "oracle": self._model_settings(),
                                "max_oracle_examples": self.matrix.max_oracle_examples,
                                "max_test_examples": self.base.max_test_examples})
    return cache.fingerprint({"synthetic": self.synthetic_fingerprint(cell), "task_model": self.base.task_model,
                              "repeats": self.matrix.repeats, "max_test_examples": self.base.max_test_examples})

  def synthetic_fingerprint(self, cell: cfg.Cell) -> str:
    """What a cell's training set depends on."""
    if cell.method in cells.FILTER_STAGES:
      return self.fingerprint(cell, cells.FILTER_STAGES[cell.method])
    if cell.generated:
      return self.fingerprint(cell, "denoise")
    domain = self.domain(cell.domain)
    extra = {"eda": cells.target_count(self.matrix, domain), "seed": self.base.task_model.seed} \
        if cell.method == cfg.EDA else {}
    return cache.fingerprint({"method": cell.method, "split": self.split(cell.domain), **extra})

  def _model_settings(self) -> dict:
    return {"task_model": self.base.task_model}

  # ------------------------------------------------------------------------------------------ stages
  def synthetic_file(self, cell: cfg.Cell) -> pathlib.Path:
    """The cell's kept synthetic set (JSONL of `export.SyntheticRecord`s)."""
    if cell.method in cfg.MSP_FILTERS:
      return self.cell_dir(cell) / workflow.SYNTHETIC_DIR / "synthetic.jsonl"
    return pathlib.Path(self.run_of(cell).denoised().files.jsonl)

  def training_set(self, cell: cfg.Cell) -> list:
    domain = self.domain(cell.domain)
    seeds = list(domain.seeds)
    if cell.method == cfg.SEED_ONLY:
      return seeds
    if cell.method == cfg.EDA:
      return seeds + eda_examples(seeds, cells.target_count(self.matrix, domain), self.base.task_model.seed)
    return seeds + [r.example for r in export.read_jsonl(self.synthetic_file(cell))]

  def test_examples(self, domain: str) -> list:
    return list(self.domain(domain).data.splits["test"])[:self.base.max_test_examples]

  def _task_models(self, cell: cfg.Cell):
    domain = self.domain(cell.domain)
    out = self.cell_dir(cell) / workflow.DOWNSTREAM_DIR
    training = self.training_set(cell)
    report = compare.compare_training_sets({cell.name: training}, domain.data.splits["validation"],
                                           self.test_examples(cell.domain), domain.data.ontology,
                                           self.base.task_model, self.matrix.repeats, out_dir=out,
                                           encoder=self.encoder, predictions_name=PREDICTIONS_FILE)
    report_file = compare.write_report(out, report)
    outputs = [out / run["predictions"] for row in report["sets"].values() for run in row["runs"]]
    return {"report": report, "report_file": str(report_file)}, [report_file, *outputs]

  def model(self, domain_name: str, kind: str) -> task_models.TrainedModel:
    """The seed model (seeds only, selected on validation: the consistency filter's) or the oracle (every
    non-test example, last epoch): trained once, kept in `model_file` for later processes (training is
    deterministic, so a kept model is the one a retraining would give)."""
    key = (domain_name, kind)
    if key in self._models:
      return self._models[key]
    path = self.model_file(domain_name, kind)
    if path.is_file():
      model = model_files.load(path)
    else:
      domain = self.domain(domain_name)
      space = LabelSpace.of(domain.data.ontology)
      if kind == "seed":
        model = task_models.train(domain.seeds, space, self.base.task_model, self.encoder,
                                  domain.data.splits["validation"])
      else:
        model = task_models.train(domain.oracle_train, space, self.base.task_model, self.encoder)
      self.log(f"{domain_name}: {kind} model trained in {model.seconds:.0f} s")
      model_files.save(model, path)
    self._models[key] = model
    return model

  def model_file(self, domain_name: str, kind: str) -> pathlib.Path:
    """Where the domain's seed or oracle model is kept, named by what it was trained from and with."""
    key = cache.fingerprint({"kind": kind, "split": self.split(domain_name), **self._model_settings(),
                             "max_oracle_examples": self.matrix.max_oracle_examples})
    domain_dir = self.cell_dir(cells.oracle_cell(domain_name)).parent  # cells/<domain>, as the cells spell it
    return domain_dir / MODELS_DIR / f"{kind}-{key[:16]}.npz"

  def _correctness(self, cell: cfg.Cell):
    task = self.domain(cell.domain).data.ontology.task
    kept = [r.example for r in export.read_jsonl(self.synthetic_file(cell))]
    predicted = task_models.predict(self.model(cell.domain, "oracle"), kept, self.encoder)
    summary = label_checks.correctness(kept, predicted, task)
    summary["oracle_train_examples"] = len(self.domain(cell.domain).oracle_train)
    return summary, []

  def _oracle_reference(self, cell: cfg.Cell):
    """The oracle model on the real test split: its scores, how many test examples it reproduces exactly
    (`label_checks.correctness`, as for a synthetic set), and its predictions file."""
    domain = self.domain(cell.domain)
    task = domain.data.ontology.task
    test = self.test_examples(cell.domain)
    predicted = task_models.predict(self.model(cell.domain, "oracle"), test, self.encoder)
    relative = pathlib.Path(workflow.DOWNSTREAM_DIR) / PREDICTIONS_FILE
    rows = [predictions.row(e, p) for e, p in zip(test, predicted)]
    predictions.write(self.cell_dir(cell) / relative, rows)
    summary = {"predictions": relative.as_posix(), "scores": predictions.score_rows(rows, task),
               "oracle_train_examples": len(domain.oracle_train), **label_checks.correctness(test, predicted, task)}
    return summary, [self.cell_dir(cell) / relative]

  def _consistency(self, cell: cfg.Cell):
    """msp_consistency: drops the candidates whose labels the seed model (seeds only, selected on validation)
    does not reproduce (`_filter`)."""
    task = self.domain(cell.domain).data.ontology.task

    def agrees(ranked: list) -> list[bool]:
      predicted = task_models.predict(self.model(cell.domain, "seed"), [c.example for c in ranked], self.encoder)
      return [label_checks.reproduces(c.example, p, task) for c, p in zip(ranked, predicted)]

    return self._filter(cell, agrees, description="consistency with the seed model", key="consistency",
                        dropped="contradicted", agreement="seed_model_agreement_ranked")

  def _noise_filter(self, cell: cfg.Cell):
    """msp_noise_filter: drops the candidates with a sign of label noise (`label_noise.is_noisy`, `_filter`)."""
    names = self.domain(cell.domain).data.ontology.names
    return self._filter(cell, lambda ranked: [not label_noise.is_noisy(c.example, names) for c in ranked],
                        description="label-noise indicators", key="label_noise_filter", dropped="noisy",
                        agreement="clean_ranked")

  def _filter(self, cell: cfg.Cell, keep: Callable[[list], list[bool]], *, description: str, key: str,
              dropped: str, agreement: str):
    """The msp cell's candidates, denoised as it did, ranked kept set first then best score first, those
    `keep` refuses dropped and the rest filled to the target (`label_checks.consistent_fill`); exported with
    the metrics of a kept set and the filter's counts under `metrics[key]` ('<dropped>_in_kept_set',
    '<dropped>_in_fill', 'filled', 'short_of_target', 'kept', and `agreement`: percent of ranked kept)."""
    source = self.run_of(cell)
    candidates, plan, result = source.denoise_result()  # the msp cell's denoising, as its denoise stage ran it
    target = source.config.generation.target_count
    kept_ids = {id(c) for c in result.kept}
    order = sorted(range(len(candidates)), key=lambda i: (id(candidates[i]) not in kept_ids, result.scores[i], i))
    ranked = [candidates[i] for i in order]
    agrees = keep(ranked)
    chosen, counts = label_checks.consistent_fill(list(zip(ranked, (float(result.scores[i]) for i in order))),
                                                  agrees, target, len(result.kept), dropped)
    provenance = {"backbone": source.config.experiment.backbone, "prompt_checkpoint": plan["prompt_checkpoint"],
                  "seed": source.config.generation.seed, "filter": description}
    records = [export.SyntheticRecord(c.example, s, c.seed_uid, c.novel, provenance) for c, s in chosen]
    counts = {**counts, "kept": len(records), agreement: 100.0 * sum(agrees) / len(agrees) if agrees else 0.0}
    return self._export_derived(cell, records, [c.requested for c, _ in chosen], result.summary, {key: counts})

  def _span_completion(self, cell: cfg.Cell):
    """msp_span_completion: the msp cell's kept set, each example with the spans the seed model finds where
    the generator wrote none (`label_checks.complete_spans`); counts under metrics['span_completion']."""
    domain = self.domain(cell.domain)
    task = domain.data.ontology.task
    kept = export.read_jsonl(self.synthetic_file(cells.source_cell(cell)))
    predicted = task_models.predict(self.model(cell.domain, "seed"), [r.example for r in kept], self.encoder)
    completed = [label_checks.complete_spans(r.example, p, task) for r, p in zip(kept, predicted)]
    records = [dataclasses.replace(r, example=e, provenance={**r.provenance, "filter": "span completion by the "
                                                             "seed model"}) for r, e in zip(kept, completed)]
    added = sum(len(e.spans) - len(r.example.spans) for r, e in zip(kept, completed))
    counts = {"kept": len(records), "spans_added": added,
              "examples_completed": sum(e is not r.example for r, e in zip(kept, completed))}
    source_metrics = json.loads(self.metrics_file(cells.source_cell(cell)).read_text(encoding="utf-8"))
    return self._export_derived(cell, records, [r.example.attributes for r in kept], source_metrics["denoise"],
                                {"span_completion": counts})

  def _export_derived(self, cell: cfg.Cell, records: list, kept_requested: list, denoise_summary: dict,
                      extra_metrics: dict):
    """Writes a derived cell's kept set (`workflow.export_synthetic`) and its metrics.json: a kept set's metrics
    (`synthetic_metrics`), the msp cell's denoising and generation drops, and `extra_metrics`."""
    source = self.run_of(cell)
    domain = self.domain(cell.domain)
    out = self.cell_dir(cell) / workflow.SYNTHETIC_DIR
    exported = workflow.export_synthetic(out, records, domain.seeds)
    generated = cache.read_record(self.cell_dir(cells.source_cell(cell)), "generate").summary
    setup = source.setup
    metrics = synthetic_metrics.synthetic_set_metrics(
        outcomes=generated["outcomes"], kept=[r.example for r in records], kept_requested=kept_requested,
        seeds=domain.seeds, ontology=domain.data.ontology, backbone=setup.model.backbone,
        params=setup.frozen_params, seed=source.config.generation.seed)
    metrics["denoise"] = denoise_summary
    metrics.update(extra_metrics)
    metrics["generation_dropped"] = generated["dropped"]
    files.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = {"kept": len(records), "metrics": metrics, "files": dataclasses.asdict(exported),
               "metrics_file": str(out / "metrics.json")}
    return summary, [exported.jsonl, exported.seeds, out / "metrics.json"]

  def metrics_file(self, cell: cfg.Cell) -> pathlib.Path:
    if cell.method in cfg.MSP_FILTERS:
      return self.cell_dir(cell) / workflow.SYNTHETIC_DIR / "metrics.json"
    return pathlib.Path(self.run_of(cell).denoised().metrics_file)


def check_trained_prompts(runner_cells: Sequence[cfg.Cell], root: pathlib.Path, matrix: cfg.MatrixConfig) -> None:
  """Before reporting without running (`--only-report`) a matrix none of whose cells has finished: ConfigError
  naming the first method that needs trained prompts and has none. A matrix partly run (split over sessions)
  reports its finished cells and lists the others as missing."""
  if any(cache.read_record(root / cell.relative_dir, cells.TASK_MODELS) for cell in runner_cells):
    return
  for cell in runner_cells:
    trainer = cells.train_cell(cell, matrix)
    if trainer is not None and cache.read_record(root / trainer.relative_dir, "train") is None:
      raise ConfigError(f"{root / trainer.relative_dir}: method {cell.method!r} needs trained prompts and this "
                        "experiment has none yet; run `msp experiment` without --only-report first")
