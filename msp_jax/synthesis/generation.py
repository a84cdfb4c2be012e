"""Controlled generation: sample from the mixed prompts, parse the outputs.

1. `msp_jax.synthesis.planning` decides what to generate (`GenerationRequest`s).
2. `generate` samples each request from the backbone with its mixed soft prompt (jitted KV-cache decoding,
   `msp_jax.synthesis.decoding`), and the template's last exemplar is the request's seed example (paper).
   With `SamplingConfig.constrained` (the default) every sample is drawn under the request's grammar
   (`msp_jax.synthesis.constraints`): it parses, and carries exactly the requested attributes, novel
   combinations included. A request the grammar cannot express is a ConfigError before any sampling.
   In a multi-process run each process samples every N-th batch and all gather the N shares (`generate`).
3. Every output is parsed back into a labelled `Example` through the data layer. Unparseable outputs and
   outputs whose labels disagree with the requested attributes are dropped and counted by reason. The
   paper-faithful alternative (`label_mode='inherit'`) keeps the text and gives it the seed's labels.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import zlib
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from msp_jax import distributed, files
from msp_jax.config_fields import new_setting
from msp_jax.synthesis import constraints, decoding, export
from msp_jax.synthesis.planning import GenerationRequest
from msp_jax.synthesis.grammars import request_grammar
from msp_jax.data import serialization
from msp_jax.data.schema import Example, Ontology
from msp_jax.errors import ConfigError, DataError
from msp_jax.tuning.model_inputs import InputShapes, encode_prompts, select_exemplars
from msp_jax.tuning.msp_model import MspModel
from msp_jax.progress import Progress

LABEL_MODES = ("parsed", "inherit")


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One generated example (parsed or inherited labels) with where it came from."""

  example: Example
  seed_uid: str
  requested: tuple[str, ...]
  novel: bool
  raw: str  # the decoded text, before parsing


@dataclasses.dataclass(frozen=True)
class GenerationResult:
  candidates: tuple[Candidate, ...]
  generated: int
  # reason -> count: parse failure reasons, 'label_mismatch', 'duplicate_of_seed', 'duplicate', 'empty'
  dropped: dict[str, int]
  raw_texts: tuple[str, ...]
  # What the parser made of every output, whatever the label mode: 'ok' (parsed, carries exactly the
  # requested attributes), 'label_mismatch', or a parse failure reason. Counts sum to `generated`.
  outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
  # Constrained sampling: outputs whose end `max_new_tokens` forced (closing spans/brackets, filler labels).
  closed_by_budget: int = 0
  # Batches this process sampled itself: all of them in a single-process run, its share when sharded over
  # processes (`generate`). Not part of the result's value: a sharded run equals the single-process one.
  sampled_batches: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Paper: sampling with temperature 1.6-2.0 and repetition penalty 2.0 on FLAN-T5/GPT-J. A 135M model
  needs a cooler setting to stay on format."""

  temperature: float = 0.8
  top_k: int = 50
  top_p: float = 0.95
  repetition_penalty: float = 1.0
  max_new_tokens: int = 48
  batch_size: int = 16
  # Sample under each request's grammar (well-formed, exactly the requested attributes); False samples from
  # the whole vocabulary, token for token as before constrained generation existed.
  constrained: bool = True
  # The frozen backbone's matmul weights while sampling (`Backbone.inference_params`): 'float32' is exact;
  # 'bfloat16' (Llama family) rounds every matmul's inputs to bfloat16 with float32 sums, through the
  # AVX512-BF16 kernel where the CPU has it: faster at generation batch sizes, not the same samples.
  weights_dtype: str = new_setting("float32")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """What to generate: `plan_generation`'s arguments, the label mode and the sampling."""

  target_count: int = 100          # synthetic examples to keep after denoising
  ratio: float = 1.2               # over-generation: ceil(kept * ratio) samples per request
  # Favour seeds carrying rare attributes. Off by default: on NLU++ hotels (paper_cpu experiment, 2 x 3 runs
  # each) rebalanced sets scored validation intent F1 46.8 ± 2.5 against 50.7 ± 2.7, and an oracle reproduced
  # 32.5% of their labels against 42.9% (docs/experiment.md).
  rebalance: bool = False
  novel_combinations: int = 0      # extra requests for attribute combinations absent from the seed set
  # Generate only these attribute combinations (e.g. (('book_room', 'date'),)), split evenly; empty: the
  # seed set's own combinations (rebalanced when `rebalance`).
  combinations: tuple[tuple[str, ...], ...] = ()
  label_mode: str = "parsed"       # 'parsed' (drop outputs whose labels disagree) or 'inherit' (authors)
  seed: int = 0
  sampling: SamplingConfig = SamplingConfig()

  def __post_init__(self):
    if isinstance(self.target_count, bool) or not isinstance(self.target_count, int) or self.target_count < 1:
      raise ConfigError(f"target_count={self.target_count!r}: the number of synthetic examples to keep must be "
                        "a whole number >= 1")
    if not self.ratio >= 1:
      raise ConfigError(f"ratio={self.ratio!r}: the over-generation ratio must be >= 1")
    if self.novel_combinations < 0:
      raise ConfigError(f"novel_combinations={self.novel_combinations!r} must be >= 0")
    if self.label_mode not in LABEL_MODES:
      raise ConfigError(f"label_mode={self.label_mode!r} is not one of {LABEL_MODES}")


def label_problem(parsed: Example, requested: Sequence[str]) -> str | None:
  """Why a parsed output does not carry exactly the requested attributes (None when it does)."""
  got, want = set(parsed.attributes), set(requested)
  if got == want:
    return None
  return "label_mismatch"


def cut_output(text: str) -> str:
  """The first line of a decoded output: the model writes one numbered example per line."""
  return text.split("\n", 1)[0].strip()


@dataclasses.dataclass(frozen=True)
class SampledBatch:
  """One batch of sampled outputs, as `decoding.sample` returns them.

  tokens: [batch_size, max_new_tokens] int32, pad after EOS; lengths: [batch_size] int32, tokens up to and
  including EOS. Rows past the batch's real rows repeat its first request (a static batch shape).
  closed_by_budget: how many of the real rows `max_new_tokens` forced to close (constrained sampling).
  """

  tokens: np.ndarray
  lengths: np.ndarray
  closed_by_budget: int


def generate(model: MspModel, soft_params: Any, frozen_params: Any, requests: Sequence[GenerationRequest],
             seeds: Sequence[Example], *, shapes: InputShapes, sampling: SamplingConfig = SamplingConfig(),
             label_mode: str = "parsed", rng: jax.Array, show_progress: bool = True,
             shard_over_processes: bool = True) -> GenerationResult:
  """Samples every request `count` times and parses the outputs (see the module docstring).

  In a multi-process run (`jax.process_count() > 1`) with `shard_over_processes`, each process samples only its
  share of the batches (`owned_batches`) and every process gathers all of them (`gather_batches`), then parses
  and deduplicates them in batch order: the result is the same as one process sampling everything. Every
  process must then call `generate` with the same arguments. `shard_over_processes=False` samples every batch
  here, as in a single-process run.
  """
  if label_mode not in LABEL_MODES:
    raise ConfigError(f"label_mode={label_mode!r} is not one of {LABEL_MODES}")
  ontology = model.ontology
  by_uid = {s.uid: s for s in seeds}
  for r in requests:
    if r.seed_uid not in by_uid:
      raise ConfigError(f"generation request names seed {r.seed_uid!r}, which is not in the seed set")
    for name in r.attributes:
      ontology.index(name, where=f"generation request for seed {r.seed_uid!r}")  # Raises on an unknown attribute.
  batch_size = sampling.batch_size
  if batch_size < 1:
    raise ConfigError(f"SamplingConfig.batch_size={batch_size}: expected a whole number >= 1")
  grammars = request_grammars(model.backbone, ontology, requests, sampling) if sampling.constrained else None
  rows = [(r, i) for r in requests for i in range(r.count)]
  num_batches = -(-len(rows) // batch_size)
  processes = jax.process_count() if shard_over_processes else 1
  mine = owned_batches(num_batches, jax.process_index() if processes > 1 else 0, processes)
  real = lambda b: min(batch_size, len(rows) - b * batch_size)  # noqa: E731
  sample = batch_sampler(model, soft_params, frozen_params, rows, seeds, shapes=shapes, sampling=sampling,
                         grammars=grammars, rng=rng)
  progress = Progress(total=sum(real(b) for b in mine), unit="ex", desc="generate",
                      enabled=show_progress and distributed.is_coordinator())
  local = []
  for b in mine:
    local.append(sample(b))
    progress.update(real(b))
  progress.close()
  batches = local if processes == 1 else gather_batches(
      local, num_batches, processes, (batch_size, sampling.max_new_tokens))
  tok = model.backbone.tokenizer
  texts = [text for b, batch in enumerate(batches) for text in decode_outputs(batch, real(b), tok)]
  result = parse_outputs(rows, texts, seeds, ontology, label_mode)
  return dataclasses.replace(result, closed_by_budget=sum(batch.closed_by_budget for batch in batches),
                             sampled_batches=len(mine))


def owned_batches(num_batches: int, process_index: int, process_count: int) -> range:
  """The batches process `process_index` of `process_count` samples: every process_count-th, from its index."""
  return range(process_index, num_batches, process_count)


def batch_sampler(model: MspModel, soft_params: Any, frozen_params: Any,
                  rows: Sequence[tuple[GenerationRequest, int]], seeds: Sequence[Example], *, shapes: InputShapes,
                  sampling: SamplingConfig, grammars: tuple[constraints.TokenVocabulary, dict[int, Any]] | None,
                  rng: jax.Array) -> Callable[[int], SampledBatch]:
  """`sample(b)`: batch b of `rows` ((request, i) pairs, rows b * batch_size onwards) sampled.

  A pure function of (rng, b, params): the key is `fold_in(rng, b * batch_size)` and each row's exemplars are
  drawn from (its seed, i), so whichever process samples a batch draws the same tokens. `grammars`: the
  vocabulary and each request's grammar (`request_grammars`) for constrained sampling, else None.
  """
  ontology, by_uid = model.ontology, {s.uid: s for s in seeds}
  tok, batch_size = model.backbone.tokenizer, sampling.batch_size
  serialize = lambda e: serialization.serialize(e, ontology.task)  # noqa: E731
  prompt_inputs = jax.jit(model.inputs)
  # e.g. packed for a CPU decode kernel
  sampling_params = model.backbone.inference_params(frozen_params, sampling.weights_dtype)

  def sample(index: int) -> SampledBatch:
    start = index * batch_size
    chunk = rows[start:start + batch_size]
    real = len(chunk)
    chunk = chunk + [chunk[0]] * (batch_size - real)  # Static batch shape: one compilation.
    shots = []
    for request, i in chunk:
      anchor = by_uid[request.seed_uid]
      picker = np.random.default_rng([hash_uid(request.seed_uid), i])
      others = select_exemplars(anchor, seeds, picker, num=1)
      shots.append([serialize(e) for e in others] + [serialize(anchor)])
    arrays = encode_prompts([r.attributes for r, _ in chunk], [by_uid[r.seed_uid].domain for r, _ in chunk],
                            shots, ontology=ontology, encode=tok.encode, pad_id=tok.pad_id, shapes=shapes)
    embeds, mask = prompt_inputs(soft_params, frozen_params, arrays)
    constraint = None
    if grammars is not None:
      constraint = constraints.GrammarConstraint(grammars[0], [grammars[1][id(r)] for r, _ in chunk],
                                                 sampling.max_new_tokens)
    tokens, lengths = decoding.sample(
        model.backbone, sampling_params, embeds, mask, jax.random.fold_in(rng, start),
        max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_k=sampling.top_k,
        top_p=sampling.top_p, repetition_penalty=sampling.repetition_penalty, constraint=constraint)
    closed = 0
    if constraint is not None:
      if constraint.problems:  # a bug, not a user error: the grammar and its closing disagree
        raise RuntimeError("constrained sampling went wrong: " + "; ".join(constraint.problems[:3]))
      closed = sum(constraint.closed_by_budget[:real])
    return SampledBatch(np.asarray(tokens, np.int32), np.asarray(lengths, np.int32), int(closed))

  return sample


def gather_batches(local: Sequence[SampledBatch], num_batches: int, process_count: int,
                   shape: tuple[int, int]) -> list[SampledBatch]:
  """All `num_batches` batches in batch order, on every process, from each process's `local` ones.

  Process p holds its `owned_batches` in order; `shape` is a batch's (batch_size, max_new_tokens). Each
  process pads its batches to the largest share, [per_process, batch_size, max_new_tokens], and
  `multihost_utils.process_allgather` stacks every process's: [process_count, per_process, ...].
  """
  if num_batches == 0:
    return []
  per_process = -(-num_batches // process_count)
  tokens = np.zeros((per_process, *shape), np.int32)
  lengths = np.zeros((per_process, shape[0]), np.int32)
  closed = np.zeros((per_process,), np.int32)
  for k, batch in enumerate(local):
    tokens[k], lengths[k], closed[k] = batch.tokens, batch.lengths, batch.closed_by_budget
  every = multihost_utils.process_allgather({"tokens": tokens, "lengths": lengths, "closed": closed})
  return [SampledBatch(every["tokens"][b % process_count, b // process_count],
                       every["lengths"][b % process_count, b // process_count],
                       int(every["closed"][b % process_count, b // process_count])) for b in range(num_batches)]


def decode_outputs(batch: SampledBatch, real: int, tokenizer: Any) -> list[str]:
  """The first `real` rows of a batch as text: EOS dropped, cut to the first line (`cut_output`)."""
  texts = []
  for j in range(real):
    ids = [int(t) for t in batch.tokens[j, :batch.lengths[j]] if int(t) != tokenizer.eos_id]
    texts.append(cut_output(tokenizer.decode(ids)))
  return texts


def parse_outputs(rows: Sequence[tuple[GenerationRequest, int]], texts: Sequence[str], seeds: Sequence[Example],
                  ontology: Ontology, label_mode: str) -> GenerationResult:
  """Parses each row's decoded text into a candidate, in row order, and counts what it drops and why.

  Sequential: an output repeating an earlier one (or a seed's text) is a duplicate, so the order of `rows`
  decides which copy is kept.
  """
  task, by_uid = ontology.task, {s.uid: s for s in seeds}
  seed_texts = {s.text.strip().lower() for s in seeds}
  generated_texts: set[str] = set()  # an output repeating an earlier one adds nothing
  candidates = []
  dropped: collections.Counter[str] = collections.Counter()
  outcomes: collections.Counter[str] = collections.Counter()
  for (request, i), raw in zip(rows, texts, strict=True):
    uid = f"synthetic/{request.seed_uid}/{i}" + ("/novel" if request.novel else "")
    anchor = by_uid[request.seed_uid]
    parsed = serialization.parse(raw, task, ontology, domain=anchor.domain, uid=uid)
    problem = (parsed.reason if isinstance(parsed, serialization.ParseFailure)
               else label_problem(parsed, request.attributes))
    outcomes[problem or "ok"] += 1
    if label_mode == "inherit":
      # The authors' way: the text inherits its seed's intents. Spans cannot move to a new text.
      text = parsed.text if isinstance(parsed, Example) else raw
      if not text.strip():
        dropped["empty"] += 1
        continue
      example = Example(uid=uid, domain=anchor.domain, text=text, intents=anchor.intents)
    elif isinstance(parsed, serialization.ParseFailure):
      dropped[parsed.reason] += 1
      continue
    elif problem:
      dropped[problem] += 1
      continue
    else:
      example = parsed
    key = example.text.strip().lower()
    if key in seed_texts:
      dropped["duplicate_of_seed"] += 1
      continue
    if key in generated_texts:
      dropped["duplicate"] += 1
      continue
    generated_texts.add(key)
    candidates.append(Candidate(example, request.seed_uid, request.attributes, request.novel, raw))
  return GenerationResult(tuple(candidates), len(rows), dict(dropped), tuple(texts), dict(outcomes))


def request_grammars(backbone: Any, ontology: Ontology, requests: Sequence[GenerationRequest],
                     sampling: SamplingConfig) -> tuple[constraints.TokenVocabulary, dict[int, Any]]:
  """The backbone's token vocabulary and each request's grammar (by `id(request)`), checked before sampling.

  ConfigError for a request its grammar cannot express, or whose shortest output (its labels with one-word
  fillers) needs more than `max_new_tokens` tokens.
  """
  vocabulary = constraints.token_vocabulary(backbone.tokenizer, backbone.vocab_size)
  grammars, shortest = {}, {}
  for request in requests:
    where = f"generation request {list(request.attributes)} (seed {request.seed_uid!r})"
    grammar = request_grammar(request.attributes, ontology, where=where)
    if grammar not in shortest:
      shortest[grammar] = len(vocabulary.tokenize_bytes(grammar.closing_text("").encode("utf-8"))) + 1
    if shortest[grammar] > sampling.max_new_tokens:
      raise ConfigError(f"{where}: its shortest output needs {shortest[grammar]} tokens, more than "
                        f"SamplingConfig.max_new_tokens={sampling.max_new_tokens}; raise max_new_tokens")
    grammars[id(request)] = grammar
  return vocabulary, grammars


def candidate_to_dict(candidate: Candidate) -> dict[str, Any]:
  """The JSONL form of a candidate (`msp generate`'s output, `msp denoise`'s input)."""
  return {"example": export.example_to_dict(candidate.example), "seed_uid": candidate.seed_uid,
          "requested": list(candidate.requested), "novel": candidate.novel, "raw": candidate.raw}


def candidate_from_dict(row: dict[str, Any], where: str) -> Candidate:
  try:
    return Candidate(export.example_from_dict(row["example"]), row["seed_uid"], tuple(row["requested"]),
                     bool(row["novel"]), row["raw"])
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"{where}: not a generated candidate ({type(e).__name__}: {e})") from e


def write_candidates(path: str | os.PathLike, candidates: Sequence[Candidate]) -> None:
  files.write_jsonl_rows(path, (candidate_to_dict(c) for c in candidates))


def read_candidates(path: str | os.PathLike) -> list[Candidate]:
  return [candidate_from_dict(row, where) for where, row in files.read_jsonl_rows(path)]


def hash_uid(uid: str) -> int:
  """A stable (process-independent) 32-bit hash of a uid, for seeding per-request draws."""
  return zlib.crc32(uid.encode("utf-8"))
