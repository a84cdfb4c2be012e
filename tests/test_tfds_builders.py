"""TFDS builders `nlupp`, `crossner`, `topv2`: prepared from a manual folder laid out like the shared data,
or from (faked) downloads of the pinned source files; counts are the data README's."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from tasks.tfds_builders import Crossner, Nlupp, Topv2  # noqa: E402
from tasks.tfds_builders import common  # noqa: E402
from tasks.tfds_builders.crossner import crossner_dataset_builder  # noqa: E402


def _prepare(builder_cls, config: str, data_dir: pathlib.Path, tfds_dir: pathlib.Path):
  builder = builder_cls(config=config, data_dir=str(tfds_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir)))
  return builder


def _count(builder, split: str) -> int:
  return sum(1 for _ in builder.as_dataset(split=split))


def test_nlupp_hotels_counts_from_manual_dir(data_dir, tmp_path):
  builder = _prepare(Nlupp, "hotels", data_dir, tmp_path)
  # README: folds 2-19 train (914), folds 0-1 (47 + 48) validation, test a copy of validation.
  assert {s: _count(builder, s) for s in ("train", "validation", "test")} == {
      "train": 914, "validation": 95, "test": 95}


def test_nlupp_features_mirror_the_example(data_dir, tmp_path):
  from msp_jax.data.nlupp import read_nlupp
  builder = _prepare(Nlupp, "hotels", data_dir, tmp_path)
  expected = read_nlupp(data_dir, "hotels").splits["validation"]
  rows = list(tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False)))
  by_uid = {row["uid"].decode(): row for row in rows}
  with_spans = [e for e in expected if e.spans]
  assert with_spans
  for example in with_spans[:10]:
    row = by_uid[example.uid]
    assert row["text"].decode() == example.text
    assert [i.decode() for i in row["intents"]] == list(example.intents)
    assert list(zip(row["spans"]["start"].tolist(), row["spans"]["end"].tolist(),
                    [l.decode() for l in row["spans"]["label"]])) == [
                        (s.start, s.end, s.label) for s in example.spans]
    assert [a.decode() for a in row["attributes"]] == list(example.attributes)


def test_crossner_ai_counts_from_manual_dir(data_dir, tmp_path):
  builder = _prepare(Crossner, "ai", data_dir, tmp_path)
  assert {s: _count(builder, s) for s in ("train", "validation", "test")} == {
      "train": 100, "validation": 350, "test": 431}


def test_topv2_weather_low_resource_splits_from_manual_dir(data_dir, tmp_path):
  builder = _prepare(Topv2, "weather", data_dir, tmp_path)
  splits = builder.info.splits
  # README: weather 23,054 / 2,667 / 5,682 rows; 25-SPIS low-resource files 176 train / 147 valid.
  assert {name: splits[name].num_examples for name in splits} == {
      "train": 23054, "validation": 2667, "test": 5682, "fewshot_train": 176, "fewshot_validation": 147}
  row = next(iter(tfds.as_numpy(builder.as_dataset(split="fewshot_train").take(1))))
  assert row["parse"].decode().startswith("[IN:")


class _FakeDownloadManager:
  """Has no manual folder; 'downloads' a pinned URL by copying the shared benchmark file it names."""

  def __init__(self, data_dir: pathlib.Path, download_dir: pathlib.Path, files):
    self.data_dir, self.download_dir, self.urls = data_dir, download_dir, []
    self.by_url = {f.url: f for f in files}

  @property
  def manual_dir(self):
    raise AssertionError("Manual directory not enabled.")

  def download(self, urls):
    self.urls.extend(urls.values())
    return {key: self.data_dir / self.by_url[url].path for key, url in urls.items()}


def test_crossner_without_manual_dir_downloads_the_pinned_files(data_dir, tmp_path):
  manager = _FakeDownloadManager(data_dir, tmp_path / "downloads", crossner_dataset_builder.FILES)
  builder = Crossner(config="ai", data_dir=str(tmp_path / "tfds"))
  generators = builder._split_generators(manager)  # pylint: disable=protected-access
  assert sorted(manager.urls) == sorted(f.url for f in crossner_dataset_builder.FILES)
  assert all(f"/{crossner_dataset_builder.COMMIT}/" in url for url in manager.urls)
  assert sorted(generators) == ["test", "train", "validation"]
  assert sum(1 for _ in generators["train"]) == 100
  laid_out = tmp_path / "downloads" / "msp_layout" / "crossner" / "ner_data" / "ai" / "train.txt"
  assert laid_out.read_bytes() == (data_dir / "crossner" / "ner_data" / "ai" / "train.txt").read_bytes()


@pytest.mark.parametrize("split, expected", [("train", "train"), ("fewshot_train", "fewshot_train"),
                                             ("few-shot train", "few_shot_train")])
def test_split_names_are_made_tfds_safe(split, expected):
  assert common.tfds_split_name(split) == expected
