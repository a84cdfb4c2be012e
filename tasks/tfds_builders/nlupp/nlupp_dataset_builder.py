"""TFDS builder `nlupp`: NLU++ (Casanueva et al. 2022), one config per domain (banking, hotels).

Splits are the MSP authors' (folds 2-19 train, folds 0-1 validation, test = a copy of validation), exactly
as `msp_jax.data.nlupp.read_nlupp` builds them. See `tasks/tfds_builders/common.py` for the sources.
"""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from msp_jax.data import nlupp as nlupp_reader
from tasks.tfds_builders import common

# PolyAI-LDN/task-specific-datasets at the commit the shared data was copied from; checksums.tsv lists its files.
COMMIT = "57ec275d8078af65b7731c2a98be812d844a6d6b"
SOURCE = f"https://github.com/PolyAI-LDN/task-specific-datasets/tree/{COMMIT}/nlupp"
FILES = common.pinned_files(pathlib.Path(__file__).with_name("checksums.tsv"))
DOMAINS = ("banking", "hotels")


def download_root(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  """Downloads the pinned files (checked against checksums.tsv); returns the data root holding `nlupp/`."""
  return common.lay_out_pinned_files(dl_manager, FILES, pathlib.Path(dl_manager.download_dir) / "msp_layout",
                                     "nlupp")


class Nlupp(common.SourceFileCodePath, tfds.core.GeneratorBasedBuilder):
  """NLU++ multi-intent utterances with slot spans."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "MSP splits of NLU++ at " + COMMIT[:8] + "."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=d, description=f"NLU++ {d}") for d in DOMAINS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Point manual_dir at a folder holding `nlupp/data/{banking,hotels}/foldN.json` and "
      "`nlupp/data/ontology.json` (the layout of the benchmark data folder). Without it the files of "
      f"{SOURCE} are downloaded and checked against checksums.tsv.")

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
