"""How good is a synthetic set: diversity, parse rate, attribute agreement and fluency (paper, Section 5).

* Distinct@k (k = 1, 2, 3): unique k-grams / all k-grams. It falls as a set grows, so the synthetic set and
  the seed set are compared on samples of the *same size* (the smaller set's), averaged over a few draws.
* Parse rate: the fraction of raw generations the data layer parses back into a labelled example.
* Attribute agreement: among parsed generations, the fraction carrying exactly the attributes asked for.
  Both are given for every raw generation (what the generator achieves) and for the kept set (what a user
  trains on; the kept examples are re-serialised and re-parsed here, independently of the generator).
* Perplexity of the kept texts under the frozen backbone (no prompts): fluency as the backbone sees it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from msp_jax.evaluation import metrics
from msp_jax.synthesis import scoring
from msp_jax.data import serialization
from msp_jax.data.schema import Example, Ontology

DISTINCT_ORDERS = (1, 2, 3)
DISTINCT_DRAWS = 5


def distinct_scores(texts: Sequence[str]) -> dict[str, float]:
  """{'distinct_1': ., 'distinct_2': ., 'distinct_3': .} over `texts`."""
  scores: dict[str, float] = {}
  for k in DISTINCT_ORDERS:
    scores.update(metrics.distinct_k(texts, k))
  return scores


def equal_size_distinct(synthetic: Sequence[str], seeds: Sequence[str], *, seed: int = 0,
                        draws: int = DISTINCT_DRAWS) -> dict[str, Any]:
  """Distinct@k of both sets on samples of min(len) texts each, averaged over `draws` random draws."""
  size = min(len(synthetic), len(seeds))
  if size == 0:
    return {"sample_size": 0, "synthetic": distinct_scores([]), "seed": distinct_scores([])}
  rng = np.random.default_rng([seed, 11])
  totals = {"synthetic": np.zeros(len(DISTINCT_ORDERS)), "seed": np.zeros(len(DISTINCT_ORDERS))}
  for _ in range(draws):
    for name, texts in (("synthetic", synthetic), ("seed", seeds)):
      sample = [texts[i] for i in rng.choice(len(texts), size=size, replace=False)]
      totals[name] += list(distinct_scores(sample).values())
  keys = [f"distinct_{k}" for k in DISTINCT_ORDERS]
  return {"sample_size": size, "draws": draws,
          **{name: dict(zip(keys, (total / draws).tolist())) for name, total in totals.items()}}


def outcome_rates(outcomes: Mapping[str, int]) -> dict[str, float]:
  """Parse rate and attribute agreement from per-output outcomes ('ok', 'label_mismatch', parse reasons)."""
  total = sum(outcomes.values())
  ok = outcomes.get("ok", 0)
  parsed = ok + outcomes.get("label_mismatch", 0)
  return {"outputs": total, "parse_rate": parsed / total if total else 0.0,
          "attribute_agreement": ok / parsed if parsed else 0.0}


def reparse_outcomes(examples: Sequence[Example], requested: Sequence[Sequence[str]],
                     ontology: Ontology) -> dict[str, int]:
  """Serialises each example and parses it back: the outcome of each (see `outcome_rates`)."""
  outcomes: dict[str, int] = {}
  for example, wanted in zip(examples, requested, strict=True):
    parsed = serialization.parse(serialization.serialize(example, ontology.task), ontology.task, ontology,
                                 domain=example.domain, uid=example.uid)
    if isinstance(parsed, serialization.ParseFailure):
      key = parsed.reason
    elif set(parsed.attributes) != set(wanted) or parsed.text != example.text:
      key = "label_mismatch"
    else:
      key = "ok"
    outcomes[key] = outcomes.get(key, 0) + 1
  return outcomes


def backbone_perplexity(backbone, params, texts: Sequence[str]) -> dict[str, float]:
  """Mean NLL per token and perplexity of `texts` under a decoder-only backbone (empty when not one)."""
  if backbone.is_encoder_decoder or not texts:
    return {}
  mean_nll, perplexity = scoring.corpus_perplexity(scoring.score_texts(backbone, params, texts))
  return {"mean_nll": mean_nll, "perplexity": perplexity}


def synthetic_set_metrics(*, outcomes: Mapping[str, int], kept: Sequence[Example],
                          kept_requested: Sequence[Sequence[str]], seeds: Sequence[Example],
                          ontology: Ontology, backbone=None, params=None, seed: int = 0) -> dict[str, Any]:
  """Everything in the module docstring, as one JSON-able dict."""
  kept_texts = [e.text for e in kept]
  result: dict[str, Any] = {
      "generated": outcome_rates(outcomes),
      "kept": {"count": len(kept), **outcome_rates(reparse_outcomes(kept, kept_requested, ontology))},
      "distinct_equal_size": equal_size_distinct(kept_texts, [e.text for e in seeds], seed=seed),
      "distinct_all_kept": distinct_scores(kept_texts),
  }
  if backbone is not None:
    result["kept"].update(backbone_perplexity(backbone, params, kept_texts))
    result["seed_perplexity"] = backbone_perplexity(backbone, params, [e.text for e in seeds])
  return result
