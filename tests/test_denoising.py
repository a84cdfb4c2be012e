"""The denoiser against an independent float64 NumPy reference, on fresh random inputs."""

from __future__ import annotations

import collections
import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from msp_jax.synthesis import denoising  # noqa: E402
from msp_jax.data.schema import Attribute, Example, Ontology  # noqa: E402
from msp_jax.errors import ConfigError, DataError, MspError  # noqa: E402

INTENTS = ("book", "cancel", "change", "wifi", "parking", "pets")
ONTOLOGY = Ontology("hotels", "multi_intent", tuple(Attribute(n, "intent", n) for n in INTENTS))


@dataclasses.dataclass(frozen=True)
class Candidate:
  example: Example
  seed_uid: str


class FakeEncoder:
  """Random unit-norm embeddings, fixed per distinct text (stands in for MiniLM where only wiring matters)."""

  def __init__(self, rng: np.random.Generator, dim: int = 16):
    self.rng, self.dim, self.table = rng, dim, {}
    self.calls = []

  def encode(self, texts):
    self.calls.append(list(texts))
    for text in texts:
      if text not in self.table:
        v = self.rng.normal(size=self.dim)
        self.table[text] = v / np.linalg.norm(v)
    return np.array([self.table[t] for t in texts], np.float32).reshape(len(texts), self.dim)


@pytest.fixture()
def rng() -> np.random.Generator:
  seed = int(np.random.SeedSequence().entropy % 2**32)
  print(f"random seed: {seed}")
  return np.random.default_rng(seed)


# ---------------------------------------------------------------- reference (float64 NumPy, plain loops)

def reference_scores(attributes: list[list[int]], frequency: np.ndarray, new: np.ndarray, seed: np.ndarray,
                     w_attr: float, w_sim: float) -> np.ndarray:
  out = []
  for attrs, a, b in zip(attributes, new.astype(np.float64), seed.astype(np.float64)):
    attr_term = float(np.mean([frequency[i] for i in attrs])) if attrs else 0.0
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    out.append(w_attr * attr_term + w_sim * (1.0 - cosine))
  return np.array(out)


def reference_keep(scores: np.ndarray, groups: list, quota: dict, target: int | None,
                   fill: bool = False) -> set[int]:
  by_group = collections.defaultdict(list)
  for i, g in enumerate(groups):
    by_group[g].append(i)
  survivors = []
  for g, members in by_group.items():
    survivors += sorted(members, key=lambda i: (scores[i], i))[:quota[g]]
  survivors.sort(key=lambda i: (scores[i], i))
  kept = survivors[:target] if target is not None else survivors
  if fill and target is not None and len(kept) < target:
    rest = sorted(set(range(len(scores))) - set(kept), key=lambda i: (scores[i], i))
    kept += rest[:target - len(kept)]
  return set(kept)


def random_problem(rng, n: int, n_attributes: int = 7, max_attr: int = 4, dim: int = 12):
  attributes = [sorted(rng.choice(n_attributes, size=rng.integers(0, max_attr + 1), replace=False).tolist())
                for _ in range(n)]
  ids = np.zeros((n, max_attr), np.int32)
  mask = np.zeros((n, max_attr), np.int32)
  for i, attrs in enumerate(attributes):
    ids[i, :len(attrs)] = attrs
    mask[i, :len(attrs)] = 1
  # Padding entries point at a real row: only the mask may exclude them.
  ids[mask == 0] = rng.integers(0, n_attributes, size=int((mask == 0).sum()))
  frequency = rng.random(n_attributes)
  new = rng.normal(size=(n, dim)) * rng.uniform(0.1, 3.0, size=(n, 1))  # not unit norm
  seed = rng.normal(size=(n, dim))
  return attributes, ids, mask, frequency, new, seed


# ---------------------------------------------------------------- the jitted core

def test_score_matches_reference(rng):
  attributes, ids, mask, frequency, new, seed = random_problem(rng, n=64)
  w_attr, w_sim = rng.uniform(0.1, 2.0, size=2)
  ours = denoising.score(ids, mask, frequency.astype(np.float32), new.astype(np.float32),
                         seed.astype(np.float32), np.array([w_attr, w_sim], np.float32))
  expected = reference_scores(attributes, frequency, new, seed, w_attr, w_sim)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-6)


def test_select_matches_reference_with_ties(rng):
  n, n_groups = 200, 23
  scores = rng.integers(0, 6, size=n).astype(np.float32) / 5  # few distinct values: many ties
  groups = rng.integers(0, n_groups, size=n).astype(np.int32)
  quota = rng.integers(1, 6, size=n_groups).astype(np.int32)
  target = int(rng.integers(1, n))
  within, keep = denoising.select(scores, groups, quota, np.int32(target))
  expected_within = reference_keep(scores, groups.tolist(), dict(enumerate(quota.tolist())), None)
  expected_keep = reference_keep(scores, groups.tolist(), dict(enumerate(quota.tolist())), target)
  assert set(np.flatnonzero(np.asarray(within)).tolist()) == expected_within
  assert set(np.flatnonzero(np.asarray(keep)).tolist()) == expected_keep


def test_select_fills_up_to_the_target_from_over_quota_candidates(rng):
  n, n_groups = 120, 40
  scores = rng.integers(0, 8, size=n).astype(np.float32) / 7
  groups = rng.integers(0, n_groups, size=n).astype(np.int32)
  quota = np.ones(n_groups, np.int32)  # at most 40 within quota
  for target in (10, 60, 119):
    within, keep = denoising.select(scores, groups, quota, np.int32(target), True)
    expected = reference_keep(scores, groups.tolist(), dict(enumerate(quota.tolist())), target, fill=True)
    assert set(np.flatnonzero(np.asarray(keep)).tolist()) == expected
    assert int(np.asarray(keep).sum()) == target
    assert np.asarray(within)[np.asarray(keep)].sum() == min(target, int(np.asarray(within).sum()))


# ---------------------------------------------------------------- the high-level denoiser

def build_set(rng, n_seeds: int = 12, per_seed: int = 5):
  """Seeds with random intents, candidates inheriting or perturbing them (parsed labels may differ)."""
  seeds = []
  for s in range(n_seeds):
    intents = tuple(sorted(rng.choice(INTENTS, size=rng.integers(1, 3), replace=False).tolist()))
    seeds.append(Example(f"seed/{s}", "hotels", f"seed utterance {s}", intents=intents))
  candidates = []
  for s, seed in enumerate(seeds):
    for j in range(per_seed):
      intents = seed.intents if rng.random() < 0.6 else (str(rng.choice(INTENTS)),)
      candidates.append(Candidate(Example(f"syn/{s}/{j}", "hotels", f"synthetic {s}-{j}", intents=intents),
                                  seed.uid))
  rng.shuffle(candidates)  # groups interleaved: selection must not rely on input order
  return seeds, candidates


def reference_denoise(seeds, candidates, encoder, keep_per_seed, target_count, w_attr, w_sim) -> set[str]:
  counts = collections.Counter(a for s in seeds for a in s.attributes)
  frequency = np.array([counts[name] / len(seeds) for name in INTENTS])
  seed_text = {s.uid: s.text for s in seeds}
  attributes = [[INTENTS.index(a) for a in c.example.attributes] for c in candidates]
  new = np.array([encoder.table[c.example.text] for c in candidates])
  seed = np.array([encoder.table[seed_text[c.seed_uid]] for c in candidates])
  scores = reference_scores(attributes, frequency, new, seed, w_attr, w_sim)
  groups = [c.seed_uid for c in candidates]
  quota = keep_per_seed if isinstance(keep_per_seed, dict) else collections.defaultdict(lambda: keep_per_seed)
  return {candidates[i].example.uid for i in reference_keep(scores, groups, quota, target_count)}


def test_denoise_keeps_what_the_reference_ranks_best(rng):
  seeds, candidates = build_set(rng)
  encoder = FakeEncoder(rng)
  weights = denoising.DenoiseWeights(*rng.uniform(0.1, 1.0, size=2))
  result = denoising.denoise(candidates, seeds, encoder=encoder, ontology=ONTOLOGY, keep_per_seed=4,
                             target_count=30, weights=weights)
  expected = reference_denoise(seeds, candidates, encoder, 4, 30, weights.attribute, weights.similarity)
  assert {c.example.uid for c in result.kept} == expected


def test_denoise_keeps_exactly_the_quota_per_seed(rng):
  # The authors generate 5 per seed and mean to keep 4, but their code keeps all 5.
  seeds, candidates = build_set(rng, n_seeds=10, per_seed=5)
  result = denoising.denoise(candidates, seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=4)
  per_seed = collections.Counter(c.seed_uid for c in result.kept)
  assert set(per_seed.values()) == {4} and len(per_seed) == 10
  assert result.summary["dropped"] == {"over_seed_quota": 10, "over_target_count": 0}


def test_denoise_takes_a_quota_per_seed_uid(rng):
  seeds, candidates = build_set(rng, n_seeds=6, per_seed=5)
  quota = {s.uid: int(rng.integers(1, 6)) for s in seeds}
  encoder = FakeEncoder(rng)
  result = denoising.denoise(candidates, seeds, encoder=encoder, ontology=ONTOLOGY, keep_per_seed=quota)
  assert {c.example.uid for c in result.kept} == reference_denoise(seeds, candidates, encoder, quota, None,
                                                                   0.5, 0.5)


def test_denoise_embeds_each_distinct_text_once(rng):
  seeds, candidates = build_set(rng, n_seeds=4, per_seed=5)
  encoder = FakeEncoder(rng)
  denoising.denoise(candidates, seeds, encoder=encoder, ontology=ONTOLOGY, keep_per_seed=4)
  (texts,) = encoder.calls
  assert sorted(texts) == sorted({c.example.text for c in candidates} | {s.text for s in seeds})


def test_denoise_lowers_the_share_of_an_over_represented_attribute(rng):
  # 16 of 20 seeds ask to 'book'; candidates inherit their seed's intent (paper mode), 5 per seed.
  seeds = [Example(f"s{i}", "hotels", f"seed {i}", intents=("book",) if i < 16 else (str(INTENTS[1 + i % 5]),))
           for i in range(20)]
  candidates = [Candidate(Example(f"c{i}/{j}", "hotels", f"cand {i} {j}", intents=s.intents), s.uid)
                for i, s in enumerate(seeds) for j in range(5)]
  result = denoising.denoise(candidates, seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=4,
                             target_count=40)
  share = lambda items: np.mean(["book" in c.example.intents for c in items])
  assert share(candidates) == pytest.approx(0.8)
  assert share(result.kept) < 0.7
  assert len(result.kept) == 40


def test_real_encoder_prefers_a_rewording_over_an_output_that_drifted_off_topic():
  from msp_jax.encoders import SentenceEncoder

  seed = Example("s", "hotels", "I want to book a room for tonight", intents=("book",))
  drifted = Candidate(Example("drifted", "hotels", "The quarterly earnings beat analyst expectations.",
                              intents=("book",)), "s")
  reworded = Candidate(Example("reworded", "hotels", "Could I reserve a hotel room for this evening?",
                               intents=("book",)), "s")
  result = denoising.denoise([drifted, reworded], [seed], encoder=SentenceEncoder(), ontology=ONTOLOGY,
                             keep_per_seed=1)
  assert [c.example.uid for c in result.kept] == ["reworded"]


# ---------------------------------------------------------------- errors a user can cause

@pytest.mark.parametrize("target", [0, -3])
def test_target_count_below_one_is_rejected(rng, target):
  seeds, candidates = build_set(rng, n_seeds=2)
  with pytest.raises(ConfigError, match=f"target_count={target}"):
    denoising.denoise(candidates, seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, target_count=target)


def test_keep_per_seed_zero_is_rejected(rng):
  seeds, candidates = build_set(rng, n_seeds=2)
  with pytest.raises(ConfigError, match="keep_per_seed=0"):
    denoising.denoise(candidates, seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=0)


def test_unknown_attribute_is_named(rng):
  seeds, candidates = build_set(rng, n_seeds=2)
  odd = Candidate(Example("odd", "hotels", "x", intents=("teleport",)), seeds[0].uid)
  with pytest.raises(MspError, match=r"candidate \d+ \(uid 'odd'.*'teleport'.*not in the ontology of domain 'hotels'"):
    denoising.denoise(candidates + [odd], seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=4)


def test_unknown_attribute_of_a_seed_names_the_seed(rng):
  seeds, candidates = build_set(rng, n_seeds=2)
  odd = Example("seed/odd", "hotels", "x", intents=("teleport",))
  with pytest.raises(ConfigError, match="seed example 'seed/odd': attribute 'teleport' is not in the ontology"):
    denoising.denoise(candidates, seeds + [odd], encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=4)


def test_unknown_seed_uid_is_named(rng):
  seeds, candidates = build_set(rng, n_seeds=2)
  orphan = Candidate(Example("orphan", "hotels", "x", intents=("book",)), "seed/404")
  with pytest.raises(DataError, match="'seed/404'"):
    denoising.denoise(candidates + [orphan], seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY, keep_per_seed=4)


def test_no_limit_at_all_is_rejected(rng):
  seeds, candidates = build_set(rng, n_seeds=2)
  with pytest.raises(ConfigError, match="keep_per_seed and/or target_count"):
    denoising.denoise(candidates, seeds, encoder=FakeEncoder(rng), ontology=ONTOLOGY)


def test_negative_weight_is_rejected():
  with pytest.raises(ConfigError, match=r"DenoiseWeights.similarity=-0.5"):
    denoising.DenoiseWeights(attribute=0.5, similarity=-0.5)
