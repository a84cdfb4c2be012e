"""`msp denoise --gin_file FILE`: score and filter a workdir's generations, export them (cached stage)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  record = stage_command.make_run(args).denoise(force=args.force)
  stage_command.print_synthetic_summary(record)
  return 0
