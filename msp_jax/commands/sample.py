"""`msp sample --backbone SPEC --prompt TEXT`: sample continuations from a backbone (chat template for
instruct models with `--chat`).

`--max-new-tokens` is bounded by what the backbone can attend over: a decoder-only model's context length
(prompt + new tokens, from its checkpoint) or, for T5, `T5_MAX_NEW_TOKENS`. A larger value samples up to the
bound and says so on stderr, instead of allocating a cache the machine cannot hold.
"""

from __future__ import annotations

import argparse
import sys

from msp_jax.errors import ConfigError

# T5's relative positions set no hard limit on the decoder; T5 v1.1 was pretrained on 512-token sequences,
# and beyond that a cache grows with no gain in what the model was trained to do.
T5_MAX_NEW_TOKENS = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--backbone", default="smollm2-135m", help="a name (smollm2-135m) or a checkpoint path")
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--num-samples", type=int, default=3)
  parser.add_argument("--max-new-tokens", type=int, default=48)
  parser.add_argument("--temperature", type=float, default=0.8)
  parser.add_argument("--top-k", type=int, default=50)
  parser.add_argument("--top-p", type=float, default=0.95)
  parser.add_argument("--greedy", action="store_true")
  # The choices of `backbones.base.WEIGHT_DTYPES`, written out: importing it would import JAX for `--help`.
  parser.add_argument("--weights-dtype", choices=("float32", "bfloat16"), default="float32",
                      help="the matmul weights while sampling: float32 (exact) or bfloat16 (faster on CPUs with "
                           "AVX512-BF16, inexact; Llama family)")
  parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--vocab", default=None, help="SentencePiece model for T5X checkpoints")


def run(args: argparse.Namespace) -> int:
  import jax
  import numpy as np

  from msp_jax.synthesis import decoding
  from msp_jax.backbones import load_backbone

  for flag, value in (("--num-samples", args.num_samples), ("--max-new-tokens", args.max_new_tokens)):
    if value < 1:  # before the backbone loads
      raise ConfigError(f"{flag} must be >= 1, got {value}")
  backbone = load_backbone(args.backbone, vocab=args.vocab).backbone
  prompt = args.prompt
  if args.chat and not backbone.is_encoder_decoder:
    from msp_jax.backbones.bpe_tokenizer import chat_prompt

    prompt = chat_prompt(prompt)
  ids, mask = decoding.tokenize_padded(backbone.tokenizer, [prompt] * args.num_samples)
  if ids.shape[1] == 0:
    raise ConfigError(f"--prompt {args.prompt!r} encodes to no tokens: give some text to continue (or --chat, "
                      "which wraps it in the model's chat template)")
  max_new_tokens = bounded_new_tokens(backbone, args.backbone, args.max_new_tokens, prompt_tokens=ids.shape[1])
  embeds = backbone.embed(backbone.params, ids)
  params = backbone.inference_params(backbone.params, args.weights_dtype)
  tokens, lengths = decoding.sample(backbone, params, embeds, mask, jax.random.PRNGKey(args.seed),
                                    max_new_tokens=max_new_tokens, temperature=args.temperature,
                                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy)
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  for i in range(args.num_samples):
    text = backbone.tokenizer.decode([int(t) for t in tokens[i, :lengths[i]]])
    print(f"[{i + 1}] {text.strip()}")
  return 0


def bounded_new_tokens(backbone, name: str, requested: int, prompt_tokens: int) -> int:
  """`requested` new tokens, or fewer where the backbone's context ends first (with a note on stderr)."""
  if backbone.is_encoder_decoder:  # the prompt is encoded; only new tokens occupy the decoder
    bound, why = T5_MAX_NEW_TOKENS, f"{name} (T5) decodes at most {T5_MAX_NEW_TOKENS} tokens here"
  else:
    context = backbone.config.context_length
    bound = context - prompt_tokens
    if bound < 1:
      raise ConfigError(f"--prompt is {prompt_tokens} tokens, which fills the {context}-token context of {name}; "
                        "shorten it")
    why = f"{name} attends over {context} positions and the prompt takes {prompt_tokens}"
  if requested <= bound:
    return requested
  print(f"note: --max-new-tokens {requested} is more than fits: {why}; sampling at most {bound} new tokens",
        file=sys.stderr)
  return bound
