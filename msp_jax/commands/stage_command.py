"""What `msp generate`, `msp denoise` and `msp run` share: gin parsing into a `workflow.Run` and the summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from msp_jax.commands.gin_utils import add_gin_arguments, one_line_errors, parse_gin


def add_arguments(parser: argparse.ArgumentParser,
                  force_help: str | None = "re-run the stage(s) even when already done") -> None:
  add_gin_arguments(parser)
  parser.add_argument("--workdir", default=None, help="overrides msp.experiment.workdir")
  if force_help:
    parser.add_argument("--force", action="store_true", help=force_help)
  parser.add_argument("--quiet", action="store_true", help="no progress bars")


def make_run(args: argparse.Namespace):
  """Parses the gin files/bindings of `args` into a `workflow.Run`."""
  from msp_jax import distributed, workflow
  from msp_jax.commands import configurables

  distributed.initialize()  # before any JAX call: joins the other hosts when MSP_* / MSP_DISTRIBUTED ask for it
  parse_gin(args.gin_file, args.gin_bindings)
  with one_line_errors():
    config = configurables.run_config()
  if args.workdir:
    config = dataclasses.replace(config, experiment=dataclasses.replace(config.experiment, workdir=args.workdir))
  return workflow.Run(config, show_progress=not args.quiet)


def print_synthetic_summary(record: dict, show_examples: int = 5) -> None:
  """Where the synthetic data and metrics are, the headline metrics, and a few kept examples."""
  from msp_jax import export, synthetic_metrics
  summary = record["summary"]
  metrics = summary["metrics"]
  generated, kept = metrics["generated"], metrics["kept"]
  distinct = metrics["distinct_equal_size"]
  print(f"synthetic data:  {summary['files']['jsonl']}  ({summary['kept']} examples; also "
        f"{pathlib.Path(summary['files']['tfrecord']).name})")
  print(f"metrics:         {summary['metrics_file']}")
  print(f"seqio:           {', '.join(n for n in summary['seqio_tasks'] if not n.endswith('_smollm2'))}")
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
  records = export.read_jsonl(summary["files"]["jsonl"])
  if records:
    print("examples:")
  for r in sorted(records, key=lambda r: r.score)[:show_examples]:
    print(f"  [{', '.join(r.example.attributes)}] {r.example.text}")


def print_json(record: dict) -> None:
  print(json.dumps({"stage": record["stage"], **{k: v for k, v in record["summary"].items() if k != "metrics"}}))


def print_downstream_summary(record: dict) -> None:
  """The downstream comparison table and where its report is."""
  from msp_jax import downstream
  print(downstream.format_report(record["summary"]["report"]))
  print(f"report:          {record['summary']['report_file']}")
