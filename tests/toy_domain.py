"""A three-intent toy domain for training tests that run in fresh interpreters (subprocess scripts).

A script makes it importable with `IMPORT_TOY_DOMAIN` (the tests folder is not a package):

  SCRIPT = toy_domain.IMPORT_TOY_DOMAIN + r'''...uses ONTOLOGY, EXAMPLES...'''
"""

from __future__ import annotations

import pathlib

from msp_jax.data.schema import Attribute, Example, Ontology

IMPORT_TOY_DOMAIN = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).resolve().parent)!r})\n"
                     "from toy_domain import EXAMPLES, ONTOLOGY\n")

ONTOLOGY = Ontology("toy", "multi_intent", (Attribute("greet", "intent", "say hello"),
                                           Attribute("bye", "intent", "say goodbye"),
                                           Attribute("thanks", "intent", "express thanks")))
_TEXTS = {"greet": "hello there", "bye": "see you soon", "thanks": "thanks a lot"}
# Six examples: every intent alone and every pair, text = the intents' phrases joined.
EXAMPLES = tuple(Example(uid=f"e{i}", domain="toy", text=" and ".join(_TEXTS[n] for n in names), intents=names)
                 for i, names in enumerate([("greet",), ("bye",), ("thanks",), ("bye", "greet"),
                                            ("greet", "thanks"), ("bye", "thanks")]))
