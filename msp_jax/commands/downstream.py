"""`msp downstream --gin_file FILE`: train the downstream task model on seed only, seed + EDA and seed + the
run's synthetic set, score each on the domain's test split, print the table (cached stage)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  record = stage_command.make_run(args).downstream(force=args.force)
  stage_command.print_downstream_summary(record)
  return 0
