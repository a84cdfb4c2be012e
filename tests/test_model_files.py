"""Task models on disk (`evaluation.model_files`): a saved model loads with the same parameters, settings and
predictions; a damaged file is one DataError naming it."""

from __future__ import annotations

import random

import jax
import numpy as np
import pytest

from msp_jax.data import catalog
from msp_jax.errors import DataError
from msp_jax.evaluation import model_files, task_models
from msp_jax.evaluation.heads import LabelSpace


@pytest.fixture(scope="module")
def trained():
  domain = catalog.load_task_data("front_desk")
  examples = random.Random().sample(list(domain.splits["train"]), 24)
  config = task_models.TaskModelConfig(encoder=task_models.RANDOM_TINY, max_epochs=2, seed=random.randrange(100))
  encoder = task_models.random_tiny()
  model = task_models.train(examples, LabelSpace.of(domain.ontology), config, encoder,
                            list(domain.splits["validation"])[:8])
  return model, encoder, list(domain.splits["test"])


def test_a_saved_model_loads_with_the_same_parameters_settings_and_predictions(tmp_path, trained):
  model, encoder, test = trained
  loaded = model_files.load(model_files.save(model, tmp_path / "m.npz"))
  assert jax.tree.structure(loaded.params) == jax.tree.structure(model.params)
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(model.params)):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  assert (loaded.space, loaded.config, loaded.buckets, loaded.history, loaded.best_epoch) == (
      model.space, model.config, model.buckets, model.history, model.best_epoch)
  assert task_models.predict(loaded, test, encoder) == task_models.predict(model, test, encoder)


@pytest.mark.parametrize("damage", [lambda data: data[:len(data) // 2], lambda data: b"not a zip file"])
def test_a_damaged_model_file_is_one_data_error_naming_it(tmp_path, trained, damage):
  path = model_files.save(trained[0], tmp_path / "m.npz")
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(DataError, match=r"m.npz: not a readable task model file") as e:
    model_files.load(path)
  assert "\n" not in str(e.value)
