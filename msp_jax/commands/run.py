"""`msp run --gin_file FILE`: train -> generate -> denoise -> export -> downstream; finished stages are
skipped."""

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
  skip = workflow_run.downstream_skip_reason()
  if skip:
    print(f"[downstream] skipped: {skip}")
  else:
    stage_command.print_downstream_summary(workflow_run.downstream(force=args.force))
  return 0
