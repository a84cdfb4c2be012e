"""Generation planning: counts, over-generation, rebalancing toward rare attributes, novel combinations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msp_jax.synthesis import generation, planning
from msp_jax.data.schema import Attribute, Example, Ontology
from msp_jax.errors import ConfigError

ONTOLOGY = Ontology("toy", "multi_intent", tuple(Attribute(n, "intent", n) for n in ["common", "rare", "mid", "x"]))


def seeds_with(counts: dict[tuple[str, ...], int]) -> list[Example]:
  out = []
  for combo, n in counts.items():
    out += [Example(uid=f"s{len(out) + i}", domain="toy", text=f"text {len(out) + i}", intents=combo)
            for i in range(n)]
  return out


def kept_share(requests, keep, seeds, attribute):
  by_uid = {s.uid: s for s in seeds}
  total = sum(keep.values())
  return sum(k for uid, k in keep.items() if attribute in by_uid[uid].attributes) / total


def test_counts_and_over_generation():
  seeds = seeds_with({("common",): 8, ("rare",): 2})
  requests, keep = planning.plan_generation(seeds, ONTOLOGY, target_count=40, ratio=1.2)
  assert sum(keep.values()) == 40
  assert sum(r.count for r in requests) == 48  # the ratio over the whole plan
  for r in requests:
    assert keep[r.seed_uid] <= r.count <= math.ceil(keep[r.seed_uid] * 1.2)


def test_many_small_requests_over_generate_by_the_ratio_not_by_rounding_up_each():
  seeds = seeds_with({("common",): 30, ("rare",): 30, ("mid",): 30})
  requests, keep = planning.plan_generation(seeds, ONTOLOGY, target_count=50, ratio=1.2, novel_combinations=3)
  assert all(k == 1 for k in keep.values())  # 50 kept over 90 seeds: one each (per-request ceil would ask 2)
  assert sum(r.count for r in requests) == 60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=30), st.floats(1.0, 5.0))
def test_generation_counts_reach_the_ratio_exactly_and_never_ask_fewer_than_kept(kept, ratio):
  counts = planning.generation_counts(kept, ratio)
  assert counts.sum() == math.ceil(round(sum(kept) * ratio, 9))
  assert all(c >= k for c, k in zip(counts, kept)) and all(c == 0 for c, k in zip(counts, kept) if k == 0)


def test_rebalancing_raises_the_share_of_rare_attributes():
  seeds = seeds_with({("common",): 8, ("rare",): 2})
  _, keep = planning.plan_generation(seeds, ONTOLOGY, target_count=100, rebalance=True)
  _, flat = planning.plan_generation(seeds, ONTOLOGY, target_count=100, rebalance=False)
  seed_share = 2 / 10
  assert kept_share(None, flat, seeds, "rare") == pytest.approx(seed_share)
  assert kept_share(None, keep, seeds, "rare") == pytest.approx(0.5)  # inverse frequency equalises


def test_unknown_attribute_in_a_requested_combination_names_the_combination():
  seeds = seeds_with({("common",): 2})
  with pytest.raises(ConfigError, match=r"combinations\[1\]: attribute 'teleport' is not in the ontology of "
                                        r"domain 'toy'"):
    planning.plan_generation(seeds, ONTOLOGY, target_count=4, combinations=(("common",), ("rare", "teleport")))


def test_novel_combinations_are_absent_from_the_seed_set():
  seeds = seeds_with({("common",): 3, ("rare",): 2, ("mid",): 2})
  requests, keep = planning.plan_generation(seeds, ONTOLOGY, target_count=20, novel_combinations=3, seed=4)
  novel = [r for r in requests if r.novel]
  assert len(novel) == 3
  seen = {s.attributes for s in seeds}
  assert all(r.attributes not in seen for r in novel)
  assert sum(keep.values()) == 20


def test_plan_is_deterministic_given_seed():
  seeds = seeds_with({("common",): 3, ("rare",): 2, ("mid",): 2})
  a = planning.plan_generation(seeds, ONTOLOGY, target_count=20, novel_combinations=2, seed=1)
  b = planning.plan_generation(seeds, ONTOLOGY, target_count=20, novel_combinations=2, seed=1)
  assert a == b


@pytest.mark.parametrize("kwargs, message", [
    ({"target_count": 0}, "target_count=0"),
    ({"target_count": 5, "ratio": 0.5}, "ratio=0.5"),
])
def test_bad_plans_are_clear_errors(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    planning.plan_generation(seeds_with({("common",): 2}), ONTOLOGY, **kwargs)


def test_cut_output_keeps_the_first_line():
  assert generation.cut_output(" book a room [tonight | date] || intents: book_room\n4) more") == \
      "book a room [tonight | date] || intents: book_room"


def test_generation_samples_under_the_request_grammar_by_default():
  assert generation.SamplingConfig().constrained is True
  assert generation.GenerationSettings().sampling.constrained is True
