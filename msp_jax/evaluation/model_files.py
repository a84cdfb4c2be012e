"""Trained task models on disk: one `.npz` per model, its parameters and, as JSON inside it, everything else
`task_models.predict` needs (label space, settings, buckets, training history).

  save(model, path)          # atomic: a killed writer leaves the old file or none
  model = load(path)         # TrainedModel; DataError naming the file when it is unreadable

Used where a model is worth keeping between processes, e.g. the experiment's oracle and seed models, which a
resumed experiment would otherwise retrain (minutes each) before its next correctness or filter stage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import zipfile

import numpy as np

from msp_jax.backbones.llama_names import set_leaf
from msp_jax.backbones.param_checks import flatten_tree
from msp_jax.errors import DataError
from msp_jax.evaluation.heads import LabelSpace
from msp_jax.evaluation.task_models import TaskModelConfig, TrainedModel
from msp_jax.files import atomic_path

_META = "__model__"  # the array holding the JSON metadata


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b/c': leaf} (`flatten_tree`'s keys) -> nested dicts."""
  tree: dict = {}
  for name, value in flat.items():
    set_leaf(tree, tuple(name.split("/")), value)
  return tree


def save(model: TrainedModel, path: str | os.PathLike) -> pathlib.Path:
  """Writes `model` to `path` (.npz) atomically; returns the path."""
  path = pathlib.Path(path)
  meta = {"space": dataclasses.asdict(model.space), "config": dataclasses.asdict(model.config),
          "buckets": list(model.buckets), "history": model.history, "best_epoch": model.best_epoch,
          "seconds": model.seconds}
  arrays = {name: np.asarray(leaf) for name, leaf in flatten_tree(model.params).items()}
  arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  return path


def load(path: str | os.PathLike) -> TrainedModel:
  """The model `save` wrote to `path`."""
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    space = meta["space"]
    return TrainedModel(
        space=LabelSpace(**{**space, "intents": tuple(space["intents"]),
                            "span_labels": tuple(space["span_labels"])}),
        config=TaskModelConfig(**meta["config"]), params=_unflatten(arrays), buckets=tuple(meta["buckets"]),
        history=meta["history"], best_epoch=int(meta["best_epoch"]), seconds=float(meta["seconds"]))
  except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: not a readable task model file ({type(e).__name__}: {e})") from None
