"""`msp register NAME --train FILE [--validation FILE] [--test FILE] [--ontology FILE] [--task KIND]`.

Validates the files, copies them with a metadata file into `$MSP_HOME/domains/NAME` (default
`~/.msp_jax/domains/NAME`, swapped into place atomically), and prints the SeqIO task names. Later processes see
the domain through `import tasks` (SeqIO) and `msp_jax.data.catalog` (every command that loads data by name).
Benchmark names (and names starting like one) and the shipped example domains' names (`front_desk`) are refused,
with or without `--overwrite`: the registry cannot shadow data msp-jax ships or reads from `$MSP_DATA_DIR`.
"""

from __future__ import annotations

import argparse

from msp_jax.data.custom import TASK_KINDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("name", help="domain name: a letter, then letters, digits or '_'")
  parser.add_argument("--train", required=True, help="training examples (JSONL or CSV)")
  parser.add_argument("--validation", help="validation examples (JSONL or CSV)")
  parser.add_argument("--test", help="test examples (JSONL or CSV)")
  parser.add_argument("--ontology", help="ontology JSON (attributes with descriptions); "
                                         "inferred from the data when absent")
  parser.add_argument("--task", choices=TASK_KINDS, help="task kind; inferred when absent")
  parser.add_argument("--overwrite", action="store_true", help="replace a domain of the same name")
  parser.add_argument("--home", help="registry root instead of $MSP_HOME (default ~/.msp_jax)")


def run(args: argparse.Namespace) -> int:
  import tasks  # pylint: disable=g-import-not-at-top  (heavy: TF + SeqIO)
  folder, domain_data, names = tasks.persist_domain(
      args.name, train=args.train, validation=args.validation, test=args.test, ontology=args.ontology,
      task=args.task, overwrite=args.overwrite, home=args.home)
  sizes = ", ".join(f"{split} {len(examples)}" for split, examples in domain_data.splits.items())
  print(f"registered domain {args.name!r} ({domain_data.ontology.task}; {sizes} examples; "
        f"{len(domain_data.ontology.attributes)} attributes) at {folder}")
  print(f"SeqIO tasks: {', '.join(names)}")
  return 0
