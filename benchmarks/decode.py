"""Sampled tokens/s of SmolLM2-135M-Instruct: msp-jax `decoding.sample` vs transformers `generate`.

Both read the same GGUF file (dequantised to float32, CPU) and sample 64 new tokens with the same settings
(temperature 1.0, top-k 50, top-p 1.0, no early stop so every run produces exactly 64 tokens per row) from
the same chat prompt, at batch 1 and 8; the timed call includes the prompt's prefill on both sides.

msp-jax samples with the backbone's fused weight layout (`LlamaBackbone.fused_params`, built once before
timing, build time reported), in two rows per batch:
  float32   the same float32 numbers as the checkpoint tree (concatenated Q/K/V and gate/up kernels): exact.
            This is the row `speedup_vs_transformers` reports.
  bfloat16  matmul weights stored in bfloat16, so every matmul rounds its inputs to bfloat16 (float32
            accumulation, everything else float32). NOT exact: reported separately, with how far it moves
            the prompt's next-token logits from the float32 ones.
transformers runs float32 with its default threads. Both run in one process with glibc malloc set to reuse
freed memory (`msp_jax.runtime.reuse_freed_memory`; `--default-malloc` to measure without). One warm-up run each (compilation for msp-jax), then
`--repeats` timed runs, interleaved across systems so a change in the machine's load hits all of them; the
table shows medians. Results go to benchmarks/results/decode.json (written atomically) with the load average
before and after: other processes on this 2-core machine slow both sides, PyTorch's OpenMP threads more.

  python benchmarks/decode.py [--repeats 3] [--batches 1 8] [--new-tokens 64] [--weights-dtypes float32 bfloat16]
                              [--skip-transformers] [--default-malloc]

The last line printed is `speedup_vs_transformers: <msp-jax float32 / transformers tokens/s at the largest
batch>`; the line before it gives the same ratio for the bfloat16 weights.
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

from msp_jax import decoding, runtime  # noqa: E402
from msp_jax.export import atomic_write_text  # noqa: E402
from msp_jax.backbones import gguf_checkpoint  # noqa: E402
from msp_jax.backbones.bpe_tokenizer import chat_prompt  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "decode.json"
PAUSE_SECONDS = 1.0  # Between timed runs.


def msp_runner(backbone, params, prompt_ids: list[int], batch: int, new_tokens: int) -> Callable[[int], float]:
  """A compiled msp-jax sampling run: `run(seed)` -> seconds."""
  tokens = jnp.asarray([prompt_ids] * batch, jnp.int32)
  embeds = backbone.embed(params, tokens)
  mask = jnp.ones(tokens.shape, jnp.int32)

  def run(seed: int) -> float:
    start = time.perf_counter()
    out, _ = decoding.sample(backbone, params, embeds, mask, jax.random.key(seed), max_new_tokens=new_tokens,
                             temperature=1.0, top_k=50, eos_id=None)
    out.block_until_ready()
    return time.perf_counter() - start

  run(0)  # Compiles.
  return run


def transformers_runner(model, prompt_ids: list[int], batch: int, new_tokens: int) -> Callable[[int], float]:
  """A warmed-up transformers `generate` run: `run(seed)` -> seconds."""
  import torch

  ids = torch.tensor([prompt_ids] * batch)
  attention = torch.ones_like(ids)

  def run(seed: int) -> float:
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
      out = model.generate(ids, attention_mask=attention, do_sample=True, use_cache=True, temperature=1.0,
                           top_k=50, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           pad_token_id=2)
    assert out.shape[1] == len(prompt_ids) + new_tokens
    return time.perf_counter() - start

  run(0)
  return run


def logit_drift(backbone, params, reference, prompt_ids: list[int]) -> dict:
  """How far `params` (e.g. bfloat16 weights) move the prompt's next-token logits from `reference`'s."""
  embeds = backbone.embed(reference, jnp.asarray([prompt_ids], jnp.int32))
  mask = jnp.ones((1, len(prompt_ids)), jnp.int32)
  first = lambda p: np.asarray(jax.jit(backbone.init_decode, static_argnums=3)(p, embeds, mask, 1)[0][0])
  got, want = first(params), first(reference)
  return {"max_abs_logit_diff": float(np.max(np.abs(got - want))), "logit_scale": float(np.max(np.abs(want))),
          "same_top1": bool(np.argmax(got) == np.argmax(want))}


def torch_info() -> dict:
  try:
    import torch
  except ImportError:
    return {}
  return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}


def write_atomically(path: pathlib.Path, payload: dict) -> None:
  atomic_write_text(path, json.dumps(payload, indent=2))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--weights-dtypes", nargs="+", default=["float32", "bfloat16"],
                      help="msp-jax rows; float32 (exact, the one compared) must come first")
  parser.add_argument("--skip-transformers", action="store_true")
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc malloc as it is (default: `runtime.reuse_freed_memory`, both systems)")
  parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)
  reuses_freed_memory = not args.default_malloc and runtime.reuse_freed_memory()  # Before JAX runs anything.
  if args.weights_dtypes[0] != "float32":
    parser.error("--weights-dtypes must start with float32 (the exact row the speedup is reported for)")

  gguf_path = gguf_checkpoint.smollm2_gguf_path()
  backbone = gguf_checkpoint.load_gguf_backbone(gguf_path)
  prompt_ids = backbone.tokenizer.encode(chat_prompt(PROMPT))
  load_before = os.getloadavg()
  layouts, fuse_seconds = {}, {}
  for dtype in args.weights_dtypes:
    start = time.perf_counter()
    layouts[dtype] = jax.block_until_ready(backbone.fused_params(backbone.params, dtype))
    fuse_seconds[dtype] = time.perf_counter() - start
  drift = {dtype: logit_drift(backbone, layouts[dtype], layouts["float32"], prompt_ids)
           for dtype in args.weights_dtypes[1:]}
  hf_model = None
  if not args.skip_transformers:
    import torch
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                    dtype=torch.float32).eval()

  rows = []
  for batch in args.batches:
    produced = batch * args.new_tokens
    runners = {f"msp-jax {dtype}": msp_runner(backbone, layouts[dtype], prompt_ids, batch, args.new_tokens)
               for dtype in args.weights_dtypes}
    if hf_model is not None:
      runners["transformers float32"] = transformers_runner(hf_model, prompt_ids, batch, args.new_tokens)
    # Interleaved repeats: a change in the machine's load hits every system alike. The pause lets the other
    # system's idle worker threads stop spinning first.
    seconds = {name: [] for name in runners}
    for seed in range(1, args.repeats + 1):
      for name, run in runners.items():
        time.sleep(PAUSE_SECONDS)
        seconds[name].append(run(seed))
    hf_rate = produced / statistics.median(seconds["transformers float32"]) if hf_model is not None else None
    for name, times in seconds.items():
      system, dtype = name.split()
      rate = produced / statistics.median(times)
      rows.append({"batch": batch, "system": system, "weights_dtype": dtype, "new_tokens": args.new_tokens,
                   "prompt_tokens": len(prompt_ids), "seconds": times, "tokens_per_s": rate,
                   "speedup_vs_transformers": None if hf_rate is None else rate / hf_rate})

  print(f"{'batch':>5} {'system':>13} {'weights':>9} {'tok/s':>7} {'vs transformers':>16}")
  for row in rows:
    ratio = row["speedup_vs_transformers"]
    print(f"{row['batch']:>5} {row['system']:>13} {row['weights_dtype']:>9} {row['tokens_per_s']:>7.1f} "
          f"{'' if ratio is None else f'{ratio:.2f}x':>16}")
  for dtype, d in drift.items():
    print(f"{dtype} weights (inexact): max |logit diff| {d['max_abs_logit_diff']:.3f} of {d['logit_scale']:.1f}, "
          f"same top-1: {d['same_top1']}")
  write_atomically(args.output, {
      "benchmark": "decode", "model": gguf_path.name, "activations_dtype": "float32",
      "weights_layout": "fused (LlamaBackbone.fused_params)", "fuse_seconds": fuse_seconds,
      "inexact_weights_drift": drift,
      "sampling": {"temperature": 1.0, "top_k": 50, "top_p": 1.0}, "repeats": args.repeats,
      "jax_version": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
      "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""), **torch_info(),
      "malloc_reuses_freed_memory": reuses_freed_memory,
      "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows})
  exact = [r for r in rows if r["system"] == "msp-jax" and r["weights_dtype"] == "float32"]
  for dtype in args.weights_dtypes[1:]:
    row = [r for r in rows if r["system"] == "msp-jax" and r["weights_dtype"] == dtype][-1]
    if row["speedup_vs_transformers"] is not None:
      print(f"speedup_vs_transformers_{dtype}_weights: {row['speedup_vs_transformers']:.2f}")
  ratio = exact[-1]["speedup_vs_transformers"]
  print(f"speedup_vs_transformers: {float('nan') if ratio is None else ratio:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
