"""Sampled tokens/s of SmolLM2-135M-Instruct: msp-jax `decoding.sample` vs transformers `generate`.

Both read the same GGUF file (dequantised to float32, CPU) and sample 64 new tokens with the same settings
(temperature 1.0, top-k 50, top-p 1.0, no early stop so every run produces exactly 64 tokens per row) from
the same chat prompt, at batch 1, 8 and 32 (32 is what generation samples at); the timed call includes the
prompt's prefill on both sides.

msp-jax samples with weights in a layout built once before timing (build time reported), one row per layout:
  bfloat16_packed  `LlamaBackbone.inference_params(params, 'bfloat16')`, what `msp generate` samples with under
            `SamplingConfig.weights_dtype = 'bfloat16'`: the fused matmul kernels stored bfloat16 in the
            AVX512-BF16 kernel's panels (`msp_jax/kernels/bf16_matmul.cc`), prefill and decode steps alike.
            NOT exact (every matmul rounds its inputs to bfloat16, float32 sums): reported with how far it
            moves the prompt's next-token logits from the float32 ones.
  packed    `LlamaBackbone.inference_params(params)`, the exact default: the fused float32 kernels (Q/K/V and
            gate/up concatenated) in 32-column panels for the CPU decode matmul kernel
            (`msp_jax/kernels/small_m_matmul.cc`). The same float32 numbers up to summation order.
  fused     the same fused float32 kernels through XLA's own dot (`LlamaBackbone.fused_params`): exact.
  bfloat16  fused matmul weights stored in bfloat16 through XLA's dot (inexact, as bfloat16_packed).
transformers runs twice, float32 and bfloat16 weights (`torch_dtype`), with its default threads; each ratio is
against the FASTER of the two at that batch.
Constrained sampling (`--constrained-batch 32`, issue 13): the first layout at that batch, free and under the
grammars of the first front_desk seeds (one request per row, `msp_jax.synthesis.constraints`: one host call per
step for the batch), interleaved in the same run; `constrained_share` is constrained / free tokens/s (target
>= 0.75). EOS does not stop a row here either, and the grammars' token budget ends each row on the last step, so
both sides produce the same number of tokens.
Both run in one process with glibc malloc set to reuse freed memory (`msp_jax.runtime.reuse_freed_memory`;
`--default-malloc` to measure without). One warm-up run each (compilation for msp-jax), then `--repeats` timed
runs, interleaved across systems so a change in the machine's load hits all of them; the table shows medians.
Results go to benchmarks/results/decode.json (written atomically) with the load average before and after and
the machine's float32 and bfloat16 matmul peaks: other processes on this 2-core machine slow both sides,
PyTorch's OpenMP threads more.

  python benchmarks/decode.py [--repeats 3] [--batches 1 8 32] [--new-tokens 64]
                              [--layouts bfloat16_packed packed fused bfloat16] [--constrained-batch 32]
                              [--skip-transformers] [--default-malloc]

The last line printed is `speedup_vs_transformers: <msp-jax first layout / the faster transformers tokens/s at
the largest batch>`; the lines before it give the same ratio for the other layouts.
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

from msp_jax.data import catalog  # noqa: E402
from msp_jax.synthesis import constraints, decoding  # noqa: E402
from msp_jax.synthesis.grammars import request_grammar  # noqa: E402
from msp_jax import runtime
from msp_jax.files import atomic_write_text  # noqa: E402
from msp_jax.backbones import gguf_checkpoint  # noqa: E402
from msp_jax.backbones.bpe_tokenizer import chat_prompt  # noqa: E402
from machine_peak import measure_peak  # noqa: E402  (benchmarks/machine_peak.py)
from msp_jax.kernels import bf16_matmul, cpu_matmul  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "decode.json"
LAYOUTS = {
    "bfloat16_packed": lambda backbone: backbone.inference_params(backbone.params, "bfloat16"),
    "packed": lambda backbone: backbone.inference_params(backbone.params),
    "fused": lambda backbone: backbone.fused_params(backbone.params),
    "bfloat16": lambda backbone: backbone.fused_params(backbone.params, "bfloat16"),
}
LAYOUT_NOTES = {
    "bfloat16_packed": "LlamaBackbone.inference_params(params, 'bfloat16'): fused kernels stored bfloat16 in the "
                       "AVX512-BF16 kernel's panels (inexact), prefill and decode",
    "packed": "LlamaBackbone.inference_params: fused float32 kernels in 32-column panels, CPU decode kernel",
    "fused": "LlamaBackbone.fused_params: fused float32 kernels, XLA dot",
    "bfloat16": "fused kernels stored in bfloat16 (inexact), XLA dot",
}
PAUSE_SECONDS = 1.0  # Between timed runs.


def msp_runner(backbone, params, prompt_ids: list[int], batch: int, new_tokens: int,
               grammars: list | None = None) -> Callable[[int], float]:
  """A compiled msp-jax sampling run: `run(seed)` -> seconds. With `grammars` (one per row), constrained; the
  timed call includes building the rows' grammar matchers, as generation does per batch."""
  tokens = jnp.asarray([prompt_ids] * batch, jnp.int32)
  embeds = backbone.embed(params, tokens)
  mask = jnp.ones(tokens.shape, jnp.int32)
  vocabulary = None if grammars is None else constraints.token_vocabulary(backbone.tokenizer, backbone.vocab_size)

  def run(seed: int) -> float:
    start = time.perf_counter()
    constraint = None if grammars is None else constraints.GrammarConstraint(vocabulary, grammars, new_tokens)
    out, _ = decoding.sample(backbone, params, embeds, mask, jax.random.key(seed), max_new_tokens=new_tokens,
                             temperature=1.0, top_k=50, eos_id=None, constraint=constraint)
    out.block_until_ready()
    if constraint is not None and constraint.problems:
      raise RuntimeError(f"constrained sampling went wrong: {constraint.problems[:2]}")
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


def constrained_rows(backbone, params, layout: str, prompt_ids: list[int], batch: int, new_tokens: int,
                     repeats: int) -> list[dict]:
  """Free and constrained sampling at `batch`, interleaved; rows for both and the constrained share."""
  domain = catalog.load_example_domain("front_desk")
  seeds = [e for e in domain.splits["train"] if e.attributes]
  grammars = [request_grammar(seeds[i % len(seeds)].attributes, domain.ontology) for i in range(batch)]
  runners = {False: msp_runner(backbone, params, prompt_ids, batch, new_tokens),
             True: msp_runner(backbone, params, prompt_ids, batch, new_tokens, grammars)}
  seconds = {False: [], True: []}
  for seed in range(1, repeats + 1):
    for constrained, run in runners.items():
      time.sleep(PAUSE_SECONDS)
      seconds[constrained].append(run(seed))
  rates = {c: batch * new_tokens / statistics.median(t) for c, t in seconds.items()}
  return [{"batch": batch, "system": "msp-jax", "layout": layout, "constrained": c, "new_tokens": new_tokens,
           "prompt_tokens": len(prompt_ids), "seconds": seconds[c], "tokens_per_s": rates[c],
           "speedup_vs_transformers": None, **({"constrained_share": rates[True] / rates[False]} if c else {})}
          for c in (False, True)]


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


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS),
                      help="msp-jax rows; the first is the one the last line reports")
  parser.add_argument("--constrained-batch", type=int, default=32,
                      help="batch of the constrained-vs-free rows (first layout; 0: skip them)")
  parser.add_argument("--skip-transformers", action="store_true")
  parser.add_argument("--default-malloc", action="store_true",
                      help="leave glibc malloc as it is (default: `runtime.reuse_freed_memory`, both systems)")
  parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)
  reuses_freed_memory = not args.default_malloc and runtime.reuse_freed_memory()  # Before JAX runs anything.

  gguf_path = gguf_checkpoint.smollm2_gguf_path()
  backbone = gguf_checkpoint.load_gguf_backbone(gguf_path)
  prompt_ids = backbone.tokenizer.encode(chat_prompt(PROMPT))
  load_before = os.getloadavg()
  peaks = {dtype: max(measure_peak(3, dtype=dtype)) for dtype in ("float32", "bfloat16")}  # GFLOP/s
  layouts, build_seconds = {}, {}
  for layout in args.layouts:
    start = time.perf_counter()
    layouts[layout] = jax.block_until_ready(LAYOUTS[layout](backbone))
    build_seconds[layout] = time.perf_counter() - start
  if "packed" in layouts and layouts["packed"]["layers_0"]["mlp"]["wi"]["kernel"].ndim != 3:
    parser.error(f"the CPU decode kernel is unavailable ({cpu_matmul.unavailable_reason()}); run with "
                 "--layouts fused bfloat16")
  if "bfloat16_packed" in layouts and layouts["bfloat16_packed"]["layers_0"]["mlp"]["wi"]["kernel"].ndim != 4:
    parser.error(f"the bfloat16 CPU kernel is unavailable ({bf16_matmul.unavailable_reason()}); run with "
                 "--layouts packed fused bfloat16")
  reference = layouts.get("fused") or backbone.fused_params(backbone.params)
  drift = {layout: logit_drift(backbone, layouts[layout], reference, prompt_ids)
           for layout in args.layouts if layout != "fused"}
  hf_models = {}
  if not args.skip_transformers:
    import torch
    from transformers import AutoModelForCausalLM

    for dtype in ("float32", "bfloat16"):
      hf_models[dtype] = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.float32).to(getattr(torch, dtype)).eval()

  rows = []
  for batch in args.batches:
    produced = batch * args.new_tokens
    runners = {f"msp-jax {layout}": msp_runner(backbone, layouts[layout], prompt_ids, batch, args.new_tokens)
               for layout in args.layouts}
    for dtype, model in hf_models.items():
      runners[f"transformers {dtype}"] = transformers_runner(model, prompt_ids, batch, args.new_tokens)
    # Interleaved repeats: a change in the machine's load hits every system alike. The pause lets the other
    # system's idle worker threads stop spinning first.
    seconds = {name: [] for name in runners}
    for seed in range(1, args.repeats + 1):
      for name, run in runners.items():
        time.sleep(PAUSE_SECONDS)
        seconds[name].append(run(seed))
    hf_rate = max((produced / statistics.median(seconds[f"transformers {dtype}"]) for dtype in hf_models),
                  default=None)  # the faster transformers
    for name, times in seconds.items():
      system, layout = name.split()
      rate = produced / statistics.median(times)
      rows.append({"batch": batch, "system": system, "layout": layout, "new_tokens": args.new_tokens,
                   "prompt_tokens": len(prompt_ids), "seconds": times, "tokens_per_s": rate,
                   "speedup_vs_transformers": None if hf_rate is None else rate / hf_rate})

  constrained_share = None
  if args.constrained_batch:
    rows += constrained_rows(backbone, layouts[args.layouts[0]], args.layouts[0], prompt_ids,
                             args.constrained_batch, args.new_tokens, args.repeats)
    constrained_share = rows[-1]["constrained_share"]

  print(f"{'batch':>5} {'system':>13} {'layout':>16} {'tok/s':>7} {'vs faster transformers':>23}")
  for row in rows:
    ratio = row["speedup_vs_transformers"]
    layout = row["layout"] + ("+grammar" if row.get("constrained") else "")
    print(f"{row['batch']:>5} {row['system']:>13} {layout:>16} {row['tokens_per_s']:>7.1f} "
          f"{'' if ratio is None else f'{ratio:.2f}x':>23}")
  print(f"matmul peak here: float32 {peaks['float32']:.0f}, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s")
  if constrained_share is not None:
    print(f"constrained / free tokens/s at batch {args.constrained_batch}: {constrained_share:.3f} (target >= 0.75)")
  for layout, d in drift.items():
    exact = "exact up to summation order" if layout == "packed" else "inexact"
    print(f"{layout} ({exact}): max |logit diff| vs fused {d['max_abs_logit_diff']:.2g} of "
          f"{d['logit_scale']:.1f}, same top-1: {d['same_top1']}")
  atomic_write_text(args.output, json.dumps({
      "benchmark": "decode", "model": gguf_path.name, "activations_dtype": "float32",
      "layouts": {layout: LAYOUT_NOTES[layout] for layout in args.layouts}, "build_seconds": build_seconds,
      "logit_drift_vs_fused": drift,
      "sampling": {"temperature": 1.0, "top_k": 50, "top_p": 1.0}, "repeats": args.repeats,
      "jax_version": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
      "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""), **torch_info(),
      "malloc_reuses_freed_memory": reuses_freed_memory,
      "load_average_before": load_before, "load_average_after": os.getloadavg(), "matmul_peak_gflops": peaks,
      "constrained_share": constrained_share, "rows": rows}, indent=2))
  last_batch = [r for r in rows if r["system"] == "msp-jax" and r["batch"] == args.batches[-1]
                and "constrained" not in r]
  for row in last_batch[1:]:
    if row["speedup_vs_transformers"] is not None:
      print(f"speedup_vs_transformers_{row['layout']}: {row['speedup_vs_transformers']:.2f}")
  ratio = last_batch[0]["speedup_vs_transformers"]
  print(f"speedup_vs_transformers: {float('nan') if ratio is None else ratio:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
