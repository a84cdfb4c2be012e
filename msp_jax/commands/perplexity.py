"""`msp perplexity --backbone SPEC --input FILE [--json]`: mean NLL per token and perplexity.

Decoder-only backbones read one text a line; encoder-decoders read `input<TAB>target` a line.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

from msp_jax import files
from msp_jax.errors import ConfigError, DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--backbone", required=True, help="a name (smollm2-135m) or a checkpoint path")
  parser.add_argument("--input", required=True, type=pathlib.Path, help="text file, one example a line")
  parser.add_argument("--json", action="store_true", help="print a JSON object with per-example values")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--vocab", default=None, help="SentencePiece model for T5X checkpoints")


def read_lines(path: pathlib.Path, paired: bool) -> tuple[list[str], list[str] | None]:
  """Texts (and sources for `input<TAB>target` files); DataError names the file and line."""
  if not path.is_file():
    raise DataError(f"{path}: no such input file")
  texts, sources = [], []
  for number, line in files.text_lines(path):  # UTF-8 (a byte-order mark dropped), else one line naming the line
    if not line.strip():
      continue
    if paired:
      if line.count("\t") != 1:
        raise DataError(f"{path}:{number}: expected `input<TAB>target` (one tab) for an encoder-decoder "
                        f"backbone, found {line.count(chr(9))} tabs")
      source, text = line.split("\t")
      sources.append(source)
    else:
      text = line
    texts.append(text)
  if not texts:
    raise DataError(f"{path}: no non-empty lines to score")
  return texts, (sources if paired else None)


def run(args: argparse.Namespace) -> int:
  from msp_jax.backbones import load_backbone
  from msp_jax.synthesis.scoring import corpus_perplexity, score_texts

  if args.batch_size < 1:
    raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
  loaded = load_backbone(args.backbone, vocab=args.vocab)
  backbone = loaded.backbone
  texts, sources = read_lines(args.input, paired=backbone.is_encoder_decoder)
  scores = score_texts(backbone, backbone.params, texts, sources, batch_size=args.batch_size)
  mean_nll, perplexity = corpus_perplexity(scores)
  if args.json:
    print(json.dumps({
        "backbone": args.backbone, "input": str(args.input), "tokens": sum(s.tokens for s in scores),
        "mean_nll": mean_nll, "perplexity": perplexity,
        "per_example": [{"line": i + 1, "tokens": s.tokens, "mean_nll": s.mean_nll,
                         "perplexity": math.exp(s.mean_nll) if s.tokens else None}
                        for i, s in enumerate(scores)],
    }, indent=2))
  else:
    print(f"{len(texts)} examples, {sum(s.tokens for s in scores)} tokens under {args.backbone}")
    print(f"mean NLL per token: {mean_nll:.4f}")
    print(f"perplexity:         {perplexity:.3f}")
  return 0
