"""`msp data-stats TASK [--json] [--data-dir DIR]`: what a task's data holds.

Prints examples per split, the number of train examples carrying each attribute (every ontology
attribute, zero included), and the size of the default few-shot seed set. `--json` prints one object:

  {"task": ..., "task_kind": ..., "splits": {split: count}, "attributes": {name: train count},
   "attribute_kinds": {kind: number of attributes}, "few_shot": {"rule", "k", "examples"} | null}
"""

from __future__ import annotations

import argparse
import collections
import json
from typing import Any

from msp_jax.data import catalog, fewshot
from msp_jax.data.schema import DomainData
from msp_jax.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("task", metavar="TASK", help="task name, e.g. nlupp_hotels, crossner_ai, topv2_weather")
  parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
  parser.add_argument("--data-dir", default=None,
                      help=f"folder holding nlupp/, crossner/, topv2/ (default: ${catalog.DATA_DIR_ENV})")


def stats(data: DomainData) -> dict[str, Any]:
  """The statistics `msp data-stats` prints, as a JSON-ready dict."""
  counts: collections.Counter[str] = collections.Counter()
  for example in data.splits.get("train", ()):
    counts.update(example.attributes)
  try:
    seeds = fewshot.few_shot(data)
    few = {"rule": fewshot.rule(data), "k": fewshot.default_k(data), "examples": len(seeds)}
  except ConfigError:
    few = None  # e.g. TOPv2 domains without low-resource files
  return {
      "task": data.name,
      "task_kind": data.ontology.task,
      "splits": {split: len(examples) for split, examples in data.splits.items()},
      "attributes": {name: counts[name] for name in data.ontology.names},
      "attribute_kinds": dict(collections.Counter(a.kind for a in data.ontology.attributes)),
      "few_shot": few,
  }


_KIND_NOUNS = {"entity": "entity type"}  # a CrossNER attribute is an entity type ("13 entity types")


def _print_tables(s: dict[str, Any]) -> None:
  print(f"task {s['task']} ({s['task_kind']})")
  print("\nsplit examples")
  for split, n in s["splits"].items():
    print(f"  {split:<20} {n:>8,}")
  kinds = ", ".join(f"{n} {_KIND_NOUNS.get(kind, kind)}{'s' if n != 1 else ''}"
                    for kind, n in s["attribute_kinds"].items())
  print(f"\nattributes ({kinds}): train examples carrying each")
  width = max((len(name) for name in s["attributes"]), default=0)
  for name, n in s["attributes"].items():
    print(f"  {name:<{width}} {n:>8,}")
  few = s["few_shot"]
  if few is None:
    print("\nfew-shot: none for this task")
  else:
    print(f"\nfew-shot: {few['examples']:,} examples ({few['rule']}, k={few['k']})")


def run(args: argparse.Namespace) -> int:
  s = stats(catalog.load_task_data(args.task, args.data_dir))
  if args.json:
    print(json.dumps(s, indent=2))
  else:
    _print_tables(s)
  return 0
