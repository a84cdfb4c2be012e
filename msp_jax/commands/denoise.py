"""`msp denoise --gin_file FILE`: score and filter a workdir's generations, export them and publish the set as
SeqIO tasks (cached stage)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  workflow_run = stage_command.make_run(args, ("denoise",))
  synthetic = workflow_run.denoise(force=args.force, publish=stage_command.publish_synthetic)
  stage_command.print_synthetic_summary(synthetic)
  return 0
