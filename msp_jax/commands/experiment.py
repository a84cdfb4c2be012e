"""`msp experiment --gin_file gin_configs/experiments/NAME.gin [--workdir DIR] [--only-report]`: the experiment
matrix (`msp.experiment_matrix`, `msp_jax.experiment.config.MatrixConfig`) with every cell's run settings from
the same gin file (`msp.TrainConfig`, `msp.SamplingConfig`, `msp.TaskModelConfig`, ... as for `msp run`), then
`results.json`, `report.md` and `report.html` in the experiment's folder. Finished stages are skipped, so a killed
experiment resumes. `--only-report` runs nothing: it collects the finished cells and renders the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

import gin

from msp_jax.commands.gin_utils import add_gin_arguments, one_line_errors
from msp_jax.experiment.config import MatrixConfig

experiment_matrix = gin.external_configurable(MatrixConfig, name="experiment_matrix", module="msp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_gin_arguments(parser)
  parser.add_argument("--workdir", default=None, help="overrides msp.experiment_matrix.workdir")
  parser.add_argument("--only-report", action="store_true",
                      help="run no stage: collect the finished cells and render the report")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


def matrix_config(args: argparse.Namespace):
  """(MatrixConfig, base RunConfig) from the gin files and bindings of `args`."""
  from msp_jax.commands import stage_command  # pylint: disable=g-import-not-at-top

  base = stage_command.run_config(argparse.Namespace(gin_file=args.gin_file, gin_bindings=args.gin_bindings,
                                                     workdir=None))
  with one_line_errors():
    matrix = experiment_matrix()
  tuples = {f.name: tuple(getattr(matrix, f.name)) for f in dataclasses.fields(matrix)
            if isinstance(getattr(matrix, f.name), list)}
  matrix = dataclasses.replace(matrix, **tuples, **({"workdir": args.workdir} if args.workdir else {}))
  return matrix, base


def run(args: argparse.Namespace) -> int:
  from msp_jax import files  # pylint: disable=g-import-not-at-top
  from msp_jax.experiment import report, results, runner  # pylint: disable=g-import-not-at-top

  matrix, base = matrix_config(args)
  files.writable_directory(matrix.workdir, "--workdir" if args.workdir else "msp.experiment_matrix.workdir")
  experiment = runner.ExperimentRunner(matrix, base, show_progress=not args.quiet)
  started = time.perf_counter()
  if args.only_report:
    for name in matrix.domains:
      experiment.domain(name)
    runner.check_trained_prompts(experiment.cells, experiment.root, matrix)
  else:
    experiment.run()
  command = "msp " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["experiment"] else ""
  collected = results.collect(experiment, command=command)
  collected["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
  path = results.write(experiment.root, collected)
  written = report.render(collected, experiment.root)
  print("\n".join(report._headline(collected)))  # pylint: disable=protected-access
  print(f"results: {path}\nreport:  {written['report.md']}\n         {written['report.html']}")
  return 0
