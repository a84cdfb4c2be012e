"""`msp run --gin_file FILE`: train -> generate -> denoise + export (+ publish the set) -> downstream; finished
stages are skipped. Every setting is checked before the first stage (`stage_command.make_run`). The downstream
stage is skipped, with the reason, where it cannot compare anything (`stage_command.downstream_skip_reason`:
e.g. denoising kept no synthetic example)."""

from __future__ import annotations

import argparse

from msp_jax.commands import stage_command


add_arguments = stage_command.add_arguments


def run(args: argparse.Namespace) -> int:
  workflow_run = stage_command.make_run(args, ("train", "generate", "denoise", "downstream"), force=args.force)
  workflow_run.train(force=args.force)
  workflow_run.generate(force=args.force)
  synthetic = workflow_run.denoise(force=args.force, publish=stage_command.publish_synthetic)
  stage_command.print_synthetic_summary(synthetic)
  skip = stage_command.downstream_skip_reason(workflow_run, synthetic)
  if skip:
    print(f"[downstream] skipped: {skip}")
  else:
    stage_command.print_downstream_summary(workflow_run.downstream(force=args.force))
  return 0
