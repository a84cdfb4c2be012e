"""TFDS builders for the three benchmarks; importing this package registers `nlupp`, `crossner`, `topv2`.

  import tasks.tfds_builders
  builder = tfds.builder("nlupp/hotels", data_dir=TFDS_DIR)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=BENCHMARK_DATA_ROOT))  # or no manual_dir
  ds = builder.as_dataset(split="validation")

See `common.py` for the two sources (manual folder or the pinned public files) and their checksums.
"""

from tasks.tfds_builders.crossner import Crossner
from tasks.tfds_builders.nlupp import Nlupp
from tasks.tfds_builders.topv2 import Topv2

__all__ = ["Crossner", "Nlupp", "Topv2"]
