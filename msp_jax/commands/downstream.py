"""`msp downstream --gin_file FILE`: train the downstream task model on seed only, seed + EDA and seed + the
run's synthetic set, score each on the domain's test split, print the table (cached stage). Refused, in one
line, where there is nothing to compare (`stage_command.downstream_skip_reason`)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command
from msp_jax.errors import ConfigError


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  workflow_run = stage_command.make_run(args, ("downstream",))
  reason = stage_command.downstream_skip_reason(workflow_run, workflow_run.denoised())
  if reason:
    raise ConfigError(f"downstream: {reason}")
  stage_command.print_downstream_summary(workflow_run.downstream(force=args.force))
  return 0
