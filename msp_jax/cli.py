"""The `msp` command. Each subcommand lives in `msp_jax/commands/<name>.py` with two functions:

  add_arguments(parser: argparse.ArgumentParser) -> None
  run(args: argparse.Namespace) -> int          # exit status

User errors (`MspError`) print as one line, `error: <message>`, and exit 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from msp_jax.errors import MspError

# subcommand name -> (module under msp_jax.commands, one-line help)
COMMANDS = {
    "perplexity": ("perplexity", "mean NLL per token and perplexity of texts under a backbone"),
    "sample": ("sample", "sample continuations of a prompt from a backbone"),
    "data-stats": ("data_stats", "examples per split, attribute counts and few-shot sizes of a task"),
    "download": ("download", "download a benchmark (nlupp, crossner, topv2) from its public source"),
    "register": ("register", "register a new domain from JSONL or CSV files"),
    "train": ("train", "tune attribute soft prompts and a mixer against a frozen backbone (gin)"),
    "generate": ("generate", "generate synthetic examples from trained prompts"),
    "denoise": ("denoise", "score and filter synthetic examples"),
    "downstream": ("downstream", "train the task model on seed / seed + EDA / seed + synthetic data, score it"),
    "run": ("run", "train -> generate -> denoise -> export -> downstream from one gin file"),
    "experiment": ("experiment", "the experiment matrix (domains x methods x seeds x repeats) and its report"),
    "report": ("report", "re-render an experiment's report from its results.json"),
}


# Commands that read or write through TensorFlow (SeqIO tasks, TFDS, TFRecord), imported up front quietly.
USES_TENSORFLOW = {"data-stats", "download", "register", "train", "generate", "denoise", "downstream", "run",
                   "experiment"}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="msp", description="Mixture of Soft Prompts in JAX.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name, (module_name, help_text) in COMMANDS.items():
    module = importlib.import_module(f"msp_jax.commands.{module_name}")
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    module.add_arguments(sub)
    sub.set_defaults(_run=module.run)
  return parser


def one_line(error: Exception) -> str:
  """The message on one line (gin appends "In call to configurable ..." on a line of its own)."""
  return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def one_line_warning(message, category, filename, lineno, line=None) -> str:
  """`warnings.formatwarning` for the command line: 'warning: <message>', without the source file and line
  (a skipped registry entry is the user's business, not a line of msp-jax's code)."""
  return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  warnings.formatwarning = one_line_warning
  # TensorFlow (SeqIO, TFRecord export) logs its CUDA/oneDNN start-up at INFO; a user has no use for it.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from msp_jax import runtime

  if os.environ.get("MSP_DEFAULT_MALLOC") != "1":
    runtime.reuse_freed_memory()  # before JAX starts: no page-faulting of each step's scratch (runtime.py)
  if argv and argv[0] in USES_TENSORFLOW:
    runtime.import_tensorflow_quietly()
  from msp_jax.commands.gin_utils import split_gin_flags

  try:
    argv, gin_flags = split_gin_flags(argv)
  except MspError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  args = build_parser().parse_args(argv)
  if gin_flags:
    if not hasattr(args, "gin_bindings"):
      print(f"error: {args.command} takes no gin bindings ({gin_flags[0]})", file=sys.stderr)
      return 2
    args.gin_bindings = list(args.gin_bindings) + gin_flags
  try:
    return int(args._run(args) or 0)
  except MspError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
