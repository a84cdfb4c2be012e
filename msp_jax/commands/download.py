"""`msp download FAMILY --data-dir DIR`: fetch a benchmark's files from its public source at a pinned commit
into `DIR/<family>` (`DIR/nlupp`, `DIR/crossner`, `DIR/topv2`), laid out as `$MSP_DATA_DIR` expects. The only
command that uses the network.

Every file is checked against the size and sha256 that the family's TFDS builder pins in its `checksums.tsv`;
a file that differs is refused and nothing is written. An existing `DIR/<family>` is never deleted or changed:
it is kept when it already holds the pinned files and refused otherwise. Without network the command says so
in one line after one attempt (no retry loop).
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import os
import pathlib
import shutil
import urllib.parse
import urllib.request
from typing import Sequence

from msp_jax import files as msp_files
from msp_jax.errors import MspError

FAMILIES = ("nlupp", "crossner", "topv2")
TIMEOUT_S = 20.0  # per connection and per read: without network, DNS or connect fail well before


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("family", choices=FAMILIES, help="which benchmark")
  parser.add_argument("--data-dir", required=True, help="folder to fill (then: export MSP_DATA_DIR=<it>)")


def builder_module(family: str):
  """The TFDS builder module of a benchmark family (it pins the source files and their checksums)."""
  return importlib.import_module(f"tasks.tfds_builders.{family}.{family}_dataset_builder")


class PinnedDownloader:
  """Fetches pinned files over HTTP(S) with the standard library, in TFDS's `download({key: url})` shape.

  One attempt per file with a timeout: a machine without network hears so within seconds, not after
  minutes of retries. A file already in `directory` with its pinned size and sha256 is not fetched again,
  so a rerun after a failure resumes. Proxies come from the usual environment variables (`HTTPS_PROXY`).
  """

  def __init__(self, directory: pathlib.Path, files: Sequence, timeout_s: float = TIMEOUT_S):
    from tasks.tfds_builders import common
    self._common = common
    self.directory = directory
    self.timeout_s = timeout_s
    self.by_url = {f.url: f for f in files}

  def download(self, urls: dict[str, str]) -> dict[str, pathlib.Path]:
    todo = [u for u in urls.values() if self._common.file_problem(self._path(u), self.by_url[u]) is not None]
    for url in todo:
      self._fetch(url, self._path(url))
    return {key: self._path(url) for key, url in urls.items()}

  def _path(self, url: str) -> pathlib.Path:
    return self.directory / self.by_url[url].path

  def _fetch(self, url: str, destination: pathlib.Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
      with urllib.request.urlopen(url, timeout=self.timeout_s) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refused, reset, TLS
      reason = getattr(e, "reason", None) or e
      raise MspError(f"cannot download {url} ({reason}); `msp download` needs access to "
                     f"{urllib.parse.urlsplit(url).netloc} (or copy the benchmark folder from a machine that has "
                     "it and point MSP_DATA_DIR at its parent)") from None
    os.replace(partial, destination)


def fetch(family: str, data_dir: pathlib.Path, download_manager=None) -> pathlib.Path:
  """Lays out `data_dir/<family>` from the pinned source files (see the module docstring); returns data_dir.

  `download_manager` is anything with TFDS's `download({key: url}) -> {key: path}`; by default a
  `PinnedDownloader` writing under `data_dir/.msp-download-<family>`, removed once the folder is complete.
  """
  from tasks.tfds_builders import common

  pinned = builder_module(family).FILES
  msp_files.writable_directory(data_dir, "--data-dir")
  cache = data_dir / f".msp-download-{family}"
  manager = download_manager or PinnedDownloader(cache, pinned)
  common.lay_out_pinned_files(manager, pinned, data_dir, family)
  if download_manager is None and cache.is_dir():
    shutil.rmtree(cache)  # our own download folder; the checked copies are in data_dir/<family>
  return data_dir


def run(args: argparse.Namespace) -> int:
  data_dir = pathlib.Path(args.data_dir).expanduser().resolve()
  fetch(args.family, data_dir)
  print(f"{args.family} is in {data_dir / args.family} (every file checked against its pinned sha256); "
        f"use it with: export MSP_DATA_DIR={data_dir}")
  return 0
