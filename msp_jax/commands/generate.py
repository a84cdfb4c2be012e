"""`msp generate --gin_file FILE`: sample synthetic examples from a workdir's trained prompts (cached stage)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  workflow_run = stage_command.make_run(args, ("generate",), force=args.force)
  stage_command.print_json("generate", workflow_run.generate(force=args.force))
  return 0
