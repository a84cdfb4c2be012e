"""What the stage commands (`msp train`, `generate`, `denoise`, `downstream`, `run`) share: gin parsing into a
`workflow.Run` that is checked before any stage runs (workdir, then settings), why the downstream comparison
cannot be made, publishing a synthetic set, and printing stage summaries."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING, Sequence

from msp_jax.commands.gin_utils import add_gin_arguments, one_line_errors, parse_gin

if TYPE_CHECKING:  # Annotations only: the run layer loads JAX, and every command module is imported by the CLI.
  from msp_jax.data.registry import SyntheticSet
  from msp_jax.run import workflow
  from msp_jax.run.config import RunConfig
  from msp_jax.run.summaries import DenoiseSummary, DownstreamSummary


def add_arguments(parser: argparse.ArgumentParser,
                  force_help: str | None = "re-run the stage(s) even when already done") -> None:
  add_gin_arguments(parser)
  parser.add_argument("--workdir", default=None, help="overrides msp.experiment.workdir")
  if force_help:
    parser.add_argument("--force", action="store_true", help=force_help)
  parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_config(args: argparse.Namespace) -> RunConfig:
  """The run's configuration from the gin files/bindings of `args` (and `--workdir`). Every
  `msp.<Class>.<field>` binding reaches its class, with or without a gin file (`configurables.default_bindings`)."""
  from msp_jax.commands import configurables

  parse_gin(args.gin_file, args.gin_bindings, defaults=configurables.default_bindings())
  with one_line_errors():
    config = configurables.run_config()
  if args.workdir:
    config = dataclasses.replace(config, experiment=dataclasses.replace(config.experiment, workdir=args.workdir))
  return config


def make_run(args: argparse.Namespace, stages: Sequence[str], force: bool = False) -> workflow.Run:
  """The `workflow.Run` of `args`, checked before any of the command's `stages` runs: first that the workdir can
  be written (before any data or model is read), then every setting (`Run.check`)."""
  from msp_jax import distributed, files
  from msp_jax.run import workflow

  distributed.initialize()  # before any JAX call: joins the other hosts when MSP_* / MSP_DISTRIBUTED ask for it
  config = run_config(args)
  files.writable_directory(config.workdir, "--workdir" if args.workdir else "msp.experiment.workdir")
  workflow_run = workflow.Run(config, show_progress=not args.quiet)
  workflow_run.check(stages, force=force)
  return workflow_run


def downstream_skip_reason(workflow_run: workflow.Run, synthetic: DenoiseSummary) -> str | None:
  """Why the downstream comparison cannot be made on this run, or None: no task model for the domain's kind,
  no test split to score on, or no synthetic example kept (seed + MSP would be seed only again)."""
  reason = workflow_run.downstream_skip_reason()
  if reason:
    return reason
  if not workflow_run.domain.splits.get("test"):
    return f"domain {workflow_run.domain.name!r} has no test examples to score on"
  if synthetic.kept == 0:
    generated = synthetic.metrics.get("generated", {})
    return (f"nothing was kept: the denoise stage kept 0 synthetic examples of {generated.get('outputs', 0)} "
            f"generated (parse rate {generated.get('parse_rate', 0.0):.0%}; see {synthetic.metrics_file}), so "
            "seed + MSP would be seed only again")
  return None


def publish_synthetic(synthetic: SyntheticSet) -> list[str]:
  """Registers an exported synthetic set's SeqIO tasks here and its pointer under $MSP_HOME/synthetic, so later
  processes (`import tasks`, the catalog) find it by name; returns the SeqIO task and mixture names."""
  import tasks  # pylint: disable=g-import-not-at-top  (heavy: TF + SeqIO)
  return tasks.persist_synthetic(synthetic)


def print_synthetic_summary(summary: DenoiseSummary, show_examples: int = 5) -> None:
  """Where the synthetic data and metrics are, the headline metrics, and a few kept examples."""
  from msp_jax.synthesis import export, synthetic_metrics
  metrics = summary.metrics
  generated, kept = metrics["generated"], metrics["kept"]
  distinct = metrics["distinct_equal_size"]
  print(f"synthetic data:  {summary.files.jsonl}  ({summary.kept} examples; also "
        f"{pathlib.Path(summary.files.tfrecord).name})")
  print(f"metrics:         {summary.metrics_file}")
  print(f"seqio:           {', '.join(n for n in summary.seqio_tasks if not n.endswith('_smollm2'))}")
  print(f"generated {generated['outputs']}: parse rate {generated['parse_rate']:.1%}, attribute agreement "
        f"{generated['attribute_agreement']:.1%}")
  line = (f"kept {kept['count']}: parse rate {kept['parse_rate']:.1%}, attribute agreement "
          f"{kept['attribute_agreement']:.1%}")
  if "perplexity" in kept:
    line += f", perplexity {kept['perplexity']:.1f} (seed {metrics['seed_perplexity']['perplexity']:.1f})"
  print(line)
  denoised = metrics["denoise"]
  if denoised.get("novel_generated"):
    print(f"novel attribute combinations: {denoised['novel_generated']} generated, "
          f"{denoised['novel_candidates']} parsed with the requested labels, {denoised['novel_kept']} kept")
  size = distinct["sample_size"]
  orders = synthetic_metrics.DISTINCT_ORDERS
  print("distinct@{} on {} examples each: synthetic {} | seed {}".format(
      "/".join(map(str, orders)), size,
      "/".join(f"{distinct['synthetic'][f'distinct_{k}']:.3f}" for k in orders),
      "/".join(f"{distinct['seed'][f'distinct_{k}']:.3f}" for k in orders)))
  records = export.read_jsonl(summary.files.jsonl)
  if records:
    print("examples:")
  for r in sorted(records, key=lambda r: r.score)[:show_examples]:
    print(f"  [{', '.join(r.example.attributes)}] {r.example.text}")


def print_json(stage: str, summary) -> None:
  """One line: the stage name and its summary (a `msp_jax.run.summaries` dataclass) as JSON."""
  print(json.dumps({"stage": stage, **summary.to_json()}))


def print_downstream_summary(summary: DownstreamSummary) -> None:
  """The downstream comparison table and where its report is."""
  from msp_jax.evaluation import compare, downstream
  from msp_jax.run import checks
  if summary.report.get("model_kind", checks.FROZEN_EMBEDDINGS) == checks.FROZEN_EMBEDDINGS:  # older records
    print(downstream.format_report(summary.report))
  else:
    print(compare.format_report(summary.report))
  print(f"report:          {summary.report_file}")
