"""`msp sample --backbone SPEC --prompt TEXT`: sample continuations from a backbone (chat template for
instruct models with `--chat`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--backbone", default="smollm2-135m", help="a name (smollm2-135m) or a checkpoint path")
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--num-samples", type=int, default=3)
  parser.add_argument("--max-new-tokens", type=int, default=48)
  parser.add_argument("--temperature", type=float, default=0.8)
  parser.add_argument("--top-k", type=int, default=50)
  parser.add_argument("--top-p", type=float, default=0.95)
  parser.add_argument("--greedy", action="store_true")
  parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--vocab", default=None, help="SentencePiece model for T5X checkpoints")


def run(args: argparse.Namespace) -> int:
  import jax
  import numpy as np

  from msp_jax import decoding
  from msp_jax.backbones import load_backbone

  backbone = load_backbone(args.backbone, vocab=args.vocab).backbone
  prompt = args.prompt
  if args.chat and not backbone.is_encoder_decoder:
    from msp_jax.backbones.bpe_tokenizer import chat_prompt

    prompt = chat_prompt(prompt)
  ids, mask = decoding.tokenize_padded(backbone.tokenizer, [prompt] * args.num_samples)
  embeds = backbone.embed(backbone.params, ids)
  params = backbone.inference_params(backbone.params)
  tokens, lengths = decoding.sample(backbone, params, embeds, mask, jax.random.PRNGKey(args.seed),
                                    max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy)
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  for i in range(args.num_samples):
    text = backbone.tokenizer.decode([int(t) for t in tokens[i, :lengths[i]]])
    print(f"[{i + 1}] {text.strip()}")
  return 0
