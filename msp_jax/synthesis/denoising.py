"""Denoising: score over-generated examples and keep the best per seed (paper, Section 3.4; docs/design.md,
"Denoising score").

Each synthetic example is scored (lower is better)

  score = w_attr * mean_a(frequency[a] for a in its attributes)
        + w_sim  * (1 - cosine(embed(example text), embed(its seed example's text)))

* `frequency[a]` is the *seed frequency* of attribute a: the fraction of seed examples (the few-shot set the
  generator was conditioned on) that carry it (`data.schema.attribute_frequency`), the same quantity
  `planning.plan_generation` rebalances with. A fraction, not a count, so the term lies in [0, 1] like the
  distance term whatever the seed set's size, and the default 0.5 / 0.5 weights mean the same thing for 20 or
  2,000 seeds. Examples carrying over-represented attributes score worse, so the kept set is pushed towards
  rare attributes. An example without attributes has an attribute term of 0 (an empty mean, defined as 0).
* The distance term penalises drift from the seed: an output whose meaning wandered away from the seed it was
  generated for has likely lost the seed's labels (noise), while a close rewording keeps them. Embeddings are
  all-MiniLM-L6-v2 sentence embeddings (`msp_jax.encoders.sentence_encoder`), as the authors used. (Exact
  copies of a seed score best on this term; dropping them is the generator's job, see `generation.py`.)

Selection keeps, per seed (the group), the `keep_per_seed` lowest scores (ties broken by candidate index, so the
result is deterministic), then optionally the `target_count` lowest overall. The authors generate 5 per seed
and mean to keep 4; their code keeps all 5 (and never imports the `Counter` it uses): here the quotas are
enforced, and checked.

The core is pure jitted functions on arrays (`score`, `select`, `score_and_select`); `denoise` turns
candidates into those arrays, embeds each distinct text once with the bucketed jitted encoder, and maps the
result back.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msp_jax.data.schema import Example, Ontology, attribute_frequency
from msp_jax.errors import ConfigError, DataError
from msp_jax.padding import pad_rows


@dataclasses.dataclass(frozen=True)
class DenoiseWeights:
  """Weights of the two score terms (paper and authors: 0.5 / 0.5)."""

  attribute: float = 0.5   # over-representation of the example's attributes in the seed set
  similarity: float = 0.5  # 1 - cosine to the seed example

  def __post_init__(self):
    for field in ("attribute", "similarity"):
      value = getattr(self, field)
      if not np.isfinite(value) or value < 0:
        raise ConfigError(f"DenoiseWeights.{field}={value}: expected a finite number >= 0")
    if self.attribute == 0 and self.similarity == 0:
      raise ConfigError("DenoiseWeights: both weights are 0, every example would score the same")

  def as_array(self) -> jax.Array:
    """[2] float32: (attribute, similarity), a traced argument so new weights do not recompile."""
    return jnp.asarray([self.attribute, self.similarity], jnp.float32)


def score(attribute_ids: jax.Array, attribute_mask: jax.Array, attribute_frequency: jax.Array,
          new_embeddings: jax.Array, seed_embeddings: jax.Array, weights: jax.Array) -> jax.Array:
  """Denoising scores [n], lower is better.

  Args:
    attribute_ids: [n, max_attr] int32 rows of `attribute_frequency` (padding entries are ignored).
    attribute_mask: [n, max_attr] 1 for a real attribute, 0 for padding.
    attribute_frequency: [n_attributes] seed frequency of each attribute.
    new_embeddings: [n, d] embeddings of the synthetic examples.
    seed_embeddings: [n, d] embedding of each example's seed (row i belongs to example i).
    weights: [2] (w_attr, w_sim).
  """
  mask = attribute_mask.astype(jnp.float32)
  frequency = attribute_frequency.astype(jnp.float32)[attribute_ids] * mask  # [n, max_attr]
  mean_frequency = frequency.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)  # empty mean -> 0
  # Cosine from scratch rather than a dot product: callers may pass embeddings that are not unit norm.
  new = new_embeddings.astype(jnp.float32)
  seed = seed_embeddings.astype(jnp.float32)
  norms = jnp.linalg.norm(new, axis=-1) * jnp.linalg.norm(seed, axis=-1)
  cosine = (new * seed).sum(axis=-1) / jnp.maximum(norms, 1e-12)
  return weights[0] * mean_frequency + weights[1] * (1.0 - cosine)


def select(scores: jax.Array, groups: jax.Array, group_quota: jax.Array, target_count: jax.Array,
           fill: jax.Array | bool = False) -> tuple[jax.Array, jax.Array]:
  """Keeps the best `group_quota[g]` of each group, then the best `target_count` of those.

  With `fill`, when fewer than `target_count` are within their quotas (some seeds got too few usable
  generations), the best of the candidates over quota make up the difference.

  Args:
    scores: [n] float, lower is better.
    groups: [n] int32 group (seed) of each candidate, in [0, n_groups).
    group_quota: [n_groups] int32 how many to keep per group (>= n: no limit).
    target_count: scalar int32 how many to keep overall (>= n: no limit).
    fill: scalar bool, see above.

  Returns:
    (within_quota [n] bool, keep [n] bool). Ties in score go to the lower index (stable), so results do not
    depend on the sort implementation.
  """
  n = scores.shape[0]
  index = jnp.arange(n, dtype=jnp.int32)
  # lexsort: the last key is the primary one -> by group, then score, then index.
  order = jnp.lexsort((index, scores, groups))
  sorted_groups = groups[order]
  first_of_group = jnp.searchsorted(sorted_groups, sorted_groups, side="left")
  rank_in_group = jnp.zeros(n, jnp.int32).at[order].set(index - first_of_group.astype(jnp.int32))
  within_quota = rank_in_group < group_quota[groups]
  # Global ranking of the survivors: those within quota first, then by score, then by index.
  order = jnp.lexsort((index, scores, jnp.logical_not(within_quota)))
  rank = jnp.zeros(n, jnp.int32).at[order].set(index)
  return within_quota, (within_quota | fill) & (rank < target_count)


@jax.jit
def score_and_select(attribute_ids: jax.Array, attribute_mask: jax.Array, attribute_frequency: jax.Array,
                     embeddings: jax.Array, new_rows: jax.Array, seed_rows: jax.Array, weights: jax.Array,
                     groups: jax.Array, group_quota: jax.Array, target_count: jax.Array,
                     fill: jax.Array | bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`score` then `select` in one compiled call.

  `embeddings [m, d]` holds each distinct text once; candidate i's text is row `new_rows[i]` and its seed's
  text row `seed_rows[i]` (both [n] int32), so a seed shared by five candidates is embedded once.
  Returns (scores [n], within_quota [n] bool, keep [n] bool).
  """
  scores = score(attribute_ids, attribute_mask, attribute_frequency, embeddings[new_rows], embeddings[seed_rows],
                 weights)
  within_quota, keep = select(scores, groups, group_quota, target_count, fill)
  return scores, within_quota, keep


class CandidateLike(Protocol):
  """What `denoise` needs of a candidate (e.g. `generation.Candidate`)."""

  example: Example
  seed_uid: str


@dataclasses.dataclass(frozen=True)
class DenoiseResult:
  """The kept candidates (in input order), their scores and what was dropped, by reason."""

  kept: tuple[CandidateLike, ...]   # in input order
  kept_scores: tuple[float, ...]    # score of each kept candidate
  scores: np.ndarray                # [n_candidates] float32, the score of every candidate (input order)
  summary: dict[str, object]        # counts: candidates, kept, dropped per reason


def _attribute_arrays(candidates: Sequence[CandidateLike], ontology: Ontology) -> tuple[np.ndarray, np.ndarray]:
  """attribute_ids [n, max_attr] int32 and mask [n, max_attr] int32 of each candidate's example."""
  rows = [[ontology.index(name, where=f"candidate {i} (uid {candidate.example.uid!r}, seed {candidate.seed_uid!r})")
           for name in candidate.example.attributes]
          for i, candidate in enumerate(candidates)]
  return pad_rows(rows, max([len(r) for r in rows] + [1]), pad_id=0)


def _check_count(name: str, value: int | None) -> None:
  if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
    raise ConfigError(f"{name}={value!r}: expected a whole number >= 1 (or leave it unset)")


def denoise(candidates: Sequence[CandidateLike], seeds: Sequence[Example], *, encoder, ontology: Ontology,
            keep_per_seed: int | Mapping[str, int] | None = None, target_count: int | None = None,
            weights: DenoiseWeights = DenoiseWeights(), fill_to_target: bool = False) -> DenoiseResult:
  """Scores `candidates` against their seeds and keeps the best (see the module docstring).

  Args:
    candidates: each with `.example` (the synthetic `Example`) and `.seed_uid` (uid of an example in `seeds`).
    seeds: the seed set: gives the seed texts and the attribute frequencies.
    encoder: a `sentence_encoder.SentenceEncoder` (anything with `encode(texts) -> [n, d]`).
    ontology: the domain's attributes; every candidate and seed attribute must be in it.
    keep_per_seed: how many to keep per seed: one number for all, or seed uid -> count (the `keep` map of
      `planning.plan_generation`). None: no per-seed limit.
    target_count: how many to keep overall, the best first. None: no global limit.
    weights: the two score weights.
    fill_to_target: when the per-seed quotas leave fewer than `target_count`, top up with the best
      candidates over quota (seeds whose generations failed to parse leave their share to others).
  """
  if fill_to_target and target_count is None:
    raise ConfigError("denoise: fill_to_target needs a target_count to fill up to")
  if keep_per_seed is None and target_count is None:
    raise ConfigError("denoise: give keep_per_seed and/or target_count, otherwise nothing would be dropped")
  _check_count("target_count", target_count)
  if isinstance(keep_per_seed, Mapping):
    for uid, count in keep_per_seed.items():
      _check_count(f"keep_per_seed[{uid!r}]", count)
  else:
    _check_count("keep_per_seed", keep_per_seed)

  seed_by_uid: dict[str, Example] = {}
  for seed in seeds:
    seed_by_uid.setdefault(seed.uid, seed)
    for name in seed.attributes:
      ontology.index(name, where=f"seed example {seed.uid!r}")  # Raises on an attribute the domain lacks.
  n = len(candidates)
  for i, candidate in enumerate(candidates):
    if candidate.seed_uid not in seed_by_uid:
      raise DataError(f"candidate {i} (uid {candidate.example.uid!r}) names seed {candidate.seed_uid!r}, which is "
                      f"not among the {len(seed_by_uid)} seed examples given")
  if n == 0:
    return DenoiseResult((), (), np.zeros(0, np.float32), {"candidates": 0, "kept": 0, "dropped": {}})

  # Groups are seeds, numbered in order of first appearance among the candidates.
  group_of: dict[str, int] = {}
  groups = np.array([group_of.setdefault(c.seed_uid, len(group_of)) for c in candidates], np.int32)
  if isinstance(keep_per_seed, Mapping):
    missing = [uid for uid in group_of if uid not in keep_per_seed]
    if missing:
      raise ConfigError(f"keep_per_seed has no count for seed(s) {missing[:5]} that candidates come from")
    quota = np.array([keep_per_seed[uid] for uid in group_of], np.int32)
  else:
    quota = np.full(len(group_of), keep_per_seed if keep_per_seed is not None else n, np.int32)

  # Each distinct text (candidate or seed) is embedded once, all in one bucketed encoder call.
  row_of: dict[str, int] = {}
  new_rows = np.array([row_of.setdefault(c.example.text, len(row_of)) for c in candidates], np.int32)
  seed_rows = np.array([row_of.setdefault(seed_by_uid[c.seed_uid].text, len(row_of)) for c in candidates],
                       np.int32)
  embeddings = encoder.encode(list(row_of))

  attribute_ids, attribute_mask = _attribute_arrays(candidates, ontology)
  frequency = attribute_frequency(list(seed_by_uid.values()), ontology)
  scores, within_quota, keep = score_and_select(
      attribute_ids, attribute_mask, frequency.astype(np.float32), embeddings, new_rows, seed_rows,
      weights.as_array(), groups, quota, np.int32(target_count if target_count is not None else n),
      np.bool_(fill_to_target))
  scores, within_quota, keep = np.asarray(scores), np.asarray(within_quota), np.asarray(keep)

  kept_idx = np.flatnonzero(keep)
  filled = int((keep & ~within_quota).sum())
  summary = {
      "candidates": n,
      "kept": int(keep.sum()),
      "filled_over_quota": filled,
      "dropped": {"over_seed_quota": int(n - within_quota.sum()) - filled,
                  "over_target_count": int((within_quota & ~keep).sum())},
      "weights": dataclasses.asdict(weights),
  }
  return DenoiseResult(tuple(candidates[i] for i in kept_idx), tuple(float(scores[i]) for i in kept_idx), scores,
                       summary)
