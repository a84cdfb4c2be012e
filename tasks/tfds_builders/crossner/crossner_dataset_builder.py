"""TFDS builder `crossner`: CrossNER (Liu et al. 2021), one config per domain (+ conll2003).

Sentences come from the BIO files through `msp_jax.data.crossner.read_crossner`; entities are character
spans of the space-joined tokens. See `tasks/tfds_builders/common.py` for the sources.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from msp_jax.data import crossner as crossner_reader
from tasks.tfds_builders import common

# zliucr/CrossNER at the commit the shared data was copied from; checksums.tsv lists its files.
COMMIT = "2e7ba2a7798c961e3f29fbc51252c5a8d40224bf"
SOURCE = f"https://github.com/zliucr/CrossNER/tree/{COMMIT}"
FILES = common.pinned_files(pathlib.Path(__file__).with_name("checksums.tsv"))
DOMAINS = ("politics", "science", "music", "literature", "ai", "conll2003")


def download_root(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  """Downloads the pinned files (checked against checksums.tsv); returns a data root holding `crossner/`."""
  return common.lay_out_pinned_files(dl_manager, FILES, pathlib.Path(dl_manager.download_dir) / "msp_layout",
                                     "crossner")


class Crossner(common.SourceFileCodePath, tfds.core.GeneratorBasedBuilder):
  """CrossNER sentences with entity spans."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "CrossNER ner_data at " + COMMIT[:8] + "."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d, description=f"CrossNER {d}") for d in DOMAINS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Point manual_dir at a folder holding `crossner/ner_data/<domain>/{train,dev,test}.txt` "
      f"(the layout of the benchmark data folder). Without it the files of {SOURCE} are downloaded and "
      "checked against checksums.tsv.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.features(),
        homepage="https://github.com/zliucr/CrossNER",
        citation="Liu et al., CrossNER: Evaluating Cross-Domain Named Entity Recognition, AAAI 2021.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = common.manual_root(dl_manager) or download_root(dl_manager)
    domain_data = crossner_reader.read_crossner(root, self.builder_config.name)
    return common.split_generators(domain_data, self._generate_examples)

  def _generate_examples(self, examples):
    return common.generate_examples(examples)
