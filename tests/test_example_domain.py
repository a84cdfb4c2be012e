"""The shipped front-desk example domain: the catalog knows it by name (no SeqIO layer needed), `import tasks`
registers its SeqIO tasks, and its files are well-formed."""

from __future__ import annotations

import collections

from msp_jax.data import catalog, serialization


def test_front_desk_is_in_the_catalog_with_all_splits():
  domain = catalog.load_task_data("front_desk")
  assert "front_desk" in catalog.known_tasks()
  sizes = {name: len(examples) for name, examples in domain.splits.items()}
  assert sizes == {"train": 102, "validation": 25, "test": 25}  # msp_jax/examples/front_desk/README.md
  counts = collections.Counter(a for e in domain.splits["train"] for a in e.attributes)
  assert set(counts) == set(domain.ontology.names)  # every attribute has seed examples
  assert min(counts.values()) >= 5


def test_import_tasks_registers_the_front_desk_seqio_tasks():
  import seqio
  import tasks  # noqa: F401

  names = set(seqio.TaskRegistry.names())
  assert {"front_desk", "front_desk_smollm2"} <= names
  rows = seqio.get_mixture_or_task("front_desk_smollm2").source.get_dataset(split="test", shuffle=False)
  texts = [r["inputs"].decode() for r in rows.as_numpy_iterator()]
  assert texts == [e.text for e in catalog.load_task_data("front_desk").splits["test"]]


def test_front_desk_round_trips_through_serialisation():
  domain = catalog.load_task_data("front_desk")
  for examples in domain.splits.values():
    for e in examples:
      parsed = serialization.parse(serialization.serialize(e, domain.ontology.task), domain.ontology.task,
                                   domain.ontology, domain=e.domain, uid=e.uid)
      assert parsed == e
