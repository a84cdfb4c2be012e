"""TFDS builder `topv2`: TOPv2 (Chen et al. 2020), one config per domain.

Besides train/validation/test, reminder and weather carry the low-resource splits the reader exposes
(the MSP few-shot seeds come from the 25-SPIS files). Rows are read by `msp_jax.data.topv2.read_topv2`.
See `tasks/tfds_builders/common.py` for the sources.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from msp_jax.data import topv2 as topv2_reader
from tasks.tfds_builders import common

# The official release (v1.1, https://fb.me/TOPv2Dataset) is a zip with no version in its URL, so the files
# come from a public mirror at a pinned commit; checksums.tsv lists them. Its main TSVs, README and LICENSE
# match the official release's published SHA-256s.
COMMIT = "63d6463e4ec505e52ef8f4c1e55b54228080f4f0"
SOURCE = f"https://github.com/quocdat32461997/prompt-semantic-parsing/tree/{COMMIT}/datasets/TOPv2_Dataset"
FILES = common.pinned_files(pathlib.Path(__file__).with_name("checksums.tsv"))
DOMAINS = ("alarm", "event", "messaging", "music", "navigation", "reminder", "timer", "weather")


def download_root(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  """Downloads the pinned files (checked against checksums.tsv); returns a data root holding `topv2/`."""
  return common.lay_out_pinned_files(dl_manager, FILES, pathlib.Path(dl_manager.download_dir) / "msp_layout",
                                     "topv2")


class Topv2(common.SourceFileCodePath, tfds.core.GeneratorBasedBuilder):
  """TOPv2 utterances with their bracketed semantic parse, intents and slot spans."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "TOPv2 v1.1 (with the low-resource splits)."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d, description=f"TOPv2 {d}") for d in DOMAINS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Point manual_dir at a folder holding `topv2/<domain>_{train,eval,test}.tsv` and "
      "`topv2/low_resource_splits/` (the layout of the benchmark data folder). Without it the files of "
      f"{SOURCE} (TOPv2 v1.1) are downloaded and checked against checksums.tsv.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.features(),
        homepage="https://fb.me/TOPv2Dataset",
        citation="Chen et al., Low-Resource Domain Adaptation for Compositional Task-Oriented Semantic "
                 "Parsing, EMNLP 2020.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = common.manual_root(dl_manager) or download_root(dl_manager)
    domain_data = topv2_reader.read_topv2(root, self.builder_config.name)
    return common.split_generators(domain_data, self._generate_examples)

  def _generate_examples(self, examples):
    return common.generate_examples(examples)
