"""TFDS builder `nlupp`: NLU++ (Casanueva et al. 2022), one config per domain (banking, hotels).

Splits are the MSP authors' (folds 2-19 train, folds 0-1 validation, test = a copy of validation), exactly
as `msp_jax.data.nlupp.read_nlupp` builds them. See `tasks/tfds_builders/common.py` for the sources.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from msp_jax.data import nlupp as nlupp_reader
from tasks.tfds_builders import common

# PolyAI-LDN/task-specific-datasets at the commit the shared data was copied from.
COMMIT = "57ec275d8078af65b7731c2a98be812d844a6d6b"
URL = f"https://github.com/PolyAI-LDN/task-specific-datasets/archive/{COMMIT}.zip"
DOMAINS = ("banking", "hotels")


def download_root(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  """Downloads and extracts the public archive; returns the data root holding `nlupp/`."""
  extracted = pathlib.Path(dl_manager.download_and_extract(URL))
  return common.find_dir_containing(extracted, "nlupp")  # The archive root has nlupp/ inside.


class Nlupp(common.SourceFileCodePath, tfds.core.GeneratorBasedBuilder):
  """NLU++ multi-intent utterances with slot spans."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "MSP splits of NLU++ at " + COMMIT[:8] + "."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d, description=f"NLU++ {d}") for d in DOMAINS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Point manual_dir at a folder holding `nlupp/data/{banking,hotels}/foldN.json` and "
      "`nlupp/data/ontology.json` (the layout of the benchmark data folder). Without it the public "
      f"archive {URL} is downloaded.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.features(),
        homepage="https://github.com/PolyAI-LDN/task-specific-datasets/tree/main/nlupp",
        citation="Casanueva et al., NLU++: A Multi-Label, Slot-Rich, Generalisable Dataset for "
                 "Natural Language Understanding in Task-Oriented Dialogue, Findings of NAACL 2022.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = common.manual_root(dl_manager) or download_root(dl_manager)
    domain_data = nlupp_reader.read_nlupp(root, self.builder_config.name)
    return common.split_generators(domain_data, self._generate_examples)

  def _generate_examples(self, examples):
    return common.generate_examples(examples)
