"""`msp download FAMILY --data-dir DIR`: fetch a benchmark's public archive (the TFDS builder's source) into
DIR laid out as `$MSP_DATA_DIR` expects (`DIR/nlupp`, `DIR/crossner`, `DIR/topv2`). The only command that
uses the network."""

from __future__ import annotations

import argparse
import pathlib

FAMILIES = ("nlupp", "crossner", "topv2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("family", choices=FAMILIES, help="which benchmark")
  parser.add_argument("--data-dir", required=True, help="folder to fill (then: export MSP_DATA_DIR=<it>)")


def builder_module(family: str):
  """The TFDS builder module of a benchmark family (it knows the archive URL and how to unpack it)."""
  import importlib
  return importlib.import_module(f"tasks.tfds_builders.{family}.{family}_dataset_builder")


def fetch(family: str, data_dir: pathlib.Path, download_manager=None) -> pathlib.Path:
  """Downloads + extracts under `data_dir/downloads` and links `data_dir/<family>` to the extracted folder."""
  import tensorflow_datasets as tfds
  from tasks.tfds_builders import common

  manager = download_manager or tfds.download.DownloadManager(download_dir=str(data_dir / "downloads"))
  root = builder_module(family).download_root(manager)
  common.link_as(data_dir, family, root / family)
  return data_dir


def run(args: argparse.Namespace) -> int:
  data_dir = pathlib.Path(args.data_dir).expanduser().resolve()
  fetch(args.family, data_dir)
  print(f"{args.family} is in {data_dir / args.family}; use it with: export MSP_DATA_DIR={data_dir}")
  return 0
