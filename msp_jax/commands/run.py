"""`msp run --gin_file FILE`: train -> generate -> denoise -> export; finished stages are skipped."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  workflow_run = stage_command.make_run(args)
  workflow_run.check()
  workflow_run.train(force=args.force)
  workflow_run.generate(force=args.force)
  record = workflow_run.denoise(force=args.force)
  stage_command.print_synthetic_summary(record)
  return 0
