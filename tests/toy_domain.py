"""A three-intent toy domain for training tests that run in fresh interpreters (subprocess scripts).

A script makes it importable with `IMPORT_TOY_DOMAIN` (the tests folder is not a package):

  SCRIPT = toy_domain.IMPORT_TOY_DOMAIN + r'''...uses ONTOLOGY, EXAMPLES, toy_step_inputs...'''
"""

from __future__ import annotations

import pathlib

from msp_jax.data.schema import Attribute, Example, Ontology

IMPORT_TOY_DOMAIN = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).resolve().parent)!r})\n"
                     "from toy_domain import EXAMPLES, ONTOLOGY, toy_step_inputs\n")

ONTOLOGY = Ontology("toy", "multi_intent", (Attribute("greet", "intent", "say hello"),
                                           Attribute("bye", "intent", "say goodbye"),
                                           Attribute("thanks", "intent", "express thanks")))
_TEXTS = {"greet": "hello there", "bye": "see you soon", "thanks": "thanks a lot"}
# Six examples: every intent alone and every pair, text = the intents' phrases joined.
EXAMPLES = tuple(Example(uid=f"e{i}", domain="toy", text=" and ".join(_TEXTS[n] for n in names), intents=names)
                 for i, names in enumerate([("greet",), ("bye",), ("thanks",), ("bye", "greet"),
                                            ("greet", "thanks"), ("bye", "thanks")]))


def toy_step_inputs(spec: str, *, batch_size: int, seed: int) -> tuple:
  """(backbone, model, batch arrays, soft params) for one prompt-training step on the toy domain.

  The batch is a pure function of `seed` (every process of a multi-process run builds the same one); the
  soft params are host copies, since train steps donate their state.
  """
  import jax
  import numpy as np

  from msp_jax.backbones import load_backbone
  from msp_jax.tuning.model_inputs import InputShapes, make_batch_fn
  from msp_jax.tuning.msp_model import MixtureConfig, MspModel

  backbone = load_backbone(spec).backbone
  model = MspModel(backbone, ONTOLOGY, MixtureConfig(mixer="attention", prefix_length=3, attribute_length=4,
                                                      max_attributes=2))
  tok = backbone.tokenizer
  batch = make_batch_fn(list(EXAMPLES), exemplar_pool=list(EXAMPLES), ontology=ONTOLOGY,
                        serialize=lambda e: e.text, encode=tok.encode, eos_id=tok.eos_id, pad_id=tok.pad_id,
                        batch_size=batch_size, seed=seed,
                        shapes=InputShapes(max_attributes=2, max_text_len=40, max_target_len=20))(0).arrays()
  soft = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(seed), backbone.params))
  return backbone, model, batch, soft


# `msp` flags for a tiny end-to-end run: quickstart.gin on the random Llama, small prompts, 8 new tokens, a
# one-epoch downstream task model at one padded length, one seed per training set. Constrained decoding is off: 8 tokens cannot hold a
# constrained example's labels.
TINY_RUN_FLAGS = ["--gin_file", "runs/quickstart.gin", "--quiet",
                  "--gin.msp.experiment.backbone='random:llama-tiny'",
                  "--gin.msp.TrainConfig.steps=2", "--gin.msp.TrainConfig.eval_every=2",
                  "--gin.msp.MixtureConfig.prefix_length=2", "--gin.msp.MixtureConfig.attribute_length=2",
                  "--gin.msp.InputShapes.max_text_len=48", "--gin.msp.InputShapes.max_target_len=24",
                  "--gin.msp.GenerationSettings.target_count=6", "--gin.msp.SamplingConfig.max_new_tokens=8",
                  "--gin.msp.SamplingConfig.constrained=False",
                  "--gin.msp.TaskModelConfig.max_epochs=1", "--gin.msp.TaskModelConfig.max_buckets=1",
                  "--gin.msp.TaskModelConfig.encoder='random:bert-tiny'",
                  "--gin.msp.downstream_evaluation.repeats=1"]
