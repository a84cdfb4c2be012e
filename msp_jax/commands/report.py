"""`msp report DIR`: re-renders `DIR/report.md`, `DIR/report.html` and `DIR/plots/` from `DIR/results.json`
(written by `msp experiment`) without recomputing anything."""

from __future__ import annotations

import argparse
import pathlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("directory", help="an experiment folder holding results.json")


def run(args: argparse.Namespace) -> int:
  from msp_jax.experiment import report, results  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(args.directory)
  written = report.render(results.read(root), root)
  print(f"report:  {written['report.md']}\n         {written['report.html']}")
  return 0
