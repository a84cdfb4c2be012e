"""`msp train --gin_file FILE [--gin.NAME=VALUE ...]`: tune attribute prompts + mixer (resumes a workdir).

Always trains (resuming from the workdir's last checkpoint up to `TrainConfig.steps`) and records the finished
stage, so a later `msp run` with the same gin file goes straight to generation.
"""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
  stage_command.add_arguments(parser, force_help=None)


def run(args: argparse.Namespace) -> int:
  stage_command.print_json("train", stage_command.make_run(args, ("train",)).train(force=True))
  return 0
