"""What the three benchmark TFDS builders share: the feature spec (the `Example` schema) and the source logic.

Every builder takes its data from one of two places:
  * a *manual directory* laid out like the shared benchmark folder (`nlupp/`, `crossner/`, `topv2/` under
    one root, see `/work/shared/data/README.md`), given as
    `download_config=tfds.download.DownloadConfig(manual_dir=ROOT)`; or
  * the public source: the individual files at a pinned commit, fetched with `dl_manager.download` when no
    manual directory is given, and laid out the same way (`lay_out_pinned_files`).
Either way the files are read by the core readers in `msp_jax.data` (no format is parsed here).

Checksums: each builder folder holds a `checksums.tsv` in TFDS's format (URL, size, sha256, file name), one
row per file; the file name column is where the file goes in the layout (`nlupp/data/hotels/fold0.json`),
which is also where TFDS looks for it in a manual directory. TFDS checks every download against it, and
`lay_out_pinned_files` checks again (so does `msp download`, which fetches without TFDS): a file whose size or
sha256 differs is refused. The values are those of the shared benchmark files, which equal the blobs of the
pinned source commits byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import secrets
import shutil
import sys
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from msp_jax.data.schema import DomainData, Example
from msp_jax.errors import ConfigError, DataError

ReadDomain = Callable[[pathlib.Path, str], DomainData]  # (data root, domain) -> DomainData


class SourceFileCodePath:
  """Mixin: `code_path` (where TFDS finds `checksums.tsv`) is the builder's own module file.

  TFDS 4.9.10 derives it through `importlib_resources`, an optional `etils[epath]` dependency that the
  pinned stack does not install; the answer is the same file either way.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)


def features() -> tfds.features.FeaturesDict:
  """The `Example` schema as TFDS features (`parse` is '' outside TOPv2)."""
  return tfds.features.FeaturesDict({
      "uid": tfds.features.Text(),
      "domain": tfds.features.Text(),
      "text": tfds.features.Text(),
      "intents": tfds.features.Sequence(tfds.features.Text()),
      "spans": tfds.features.Sequence({
          "start": tfds.features.Scalar(dtype=np.int32),
          "end": tfds.features.Scalar(dtype=np.int32),
          "label": tfds.features.Text(),
          "text": tfds.features.Text(),
      }),
      "parse": tfds.features.Text(),
      "attributes": tfds.features.Sequence(tfds.features.Text()),
  })


def example_to_features(example: Example) -> dict:
  return {
      "uid": example.uid,
      "domain": example.domain,
      "text": example.text,
      "intents": list(example.intents),
      "spans": {
          "start": [s.start for s in example.spans],
          "end": [s.end for s in example.spans],
          "label": [s.label for s in example.spans],
          "text": [s.text for s in example.spans],
      },
      "parse": example.parse or "",
      "attributes": list(example.attributes),
  }


def tfds_split_name(split: str) -> str:
  """TFDS split names must be word characters: 'train_25spis' stays, 'few-shot train' -> 'few_shot_train'."""
  return re.sub(r"\W+", "_", split).strip("_")


def manual_root(dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
  """The manual directory when the user gave a non-empty one, else None."""
  try:
    return pathlib.Path(os.fspath(dl_manager.manual_dir))
  except (AssertionError, ValueError):
    return None  # No manual dir configured / empty: download instead.


@dataclasses.dataclass(frozen=True)
class PinnedFile:
  """One file of a benchmark's public source at a pinned commit."""

  url: str
  size: int     # bytes
  sha256: str   # hex digest
  path: str     # where it goes under the data root, e.g. 'nlupp/data/hotels/fold0.json'


def pinned_files(checksums_tsv: str | os.PathLike) -> tuple[PinnedFile, ...]:
  """The rows of a builder's `checksums.tsv` (TFDS's format: URL, size, sha256, layout path; '#' comments)."""
  path = pathlib.Path(checksums_tsv)
  files = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip() or line.startswith("#"):
      continue
    fields = line.split("\t")
    if len(fields) != 4:
      raise ValueError(f"{path}:{number}: expected URL<TAB>size<TAB>sha256<TAB>path, got {len(fields)} fields")
    url, size, sha256, relative = fields
    files.append(PinnedFile(url, int(size), sha256, relative))
  return tuple(files)


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def file_problem(path: str | os.PathLike, pinned: PinnedFile) -> str | None:
  """Why the file at `path` is not the pinned one (missing, size, sha256), or None when it is."""
  path = pathlib.Path(path)
  if not path.is_file():
    return f"{path} is missing"
  size = path.stat().st_size
  if size != pinned.size:
    return f"{path} has {size} bytes, expected {pinned.size}"
  digest = sha256_of(path)
  if digest != pinned.sha256:
    return f"{path} has sha256 {digest}, expected {pinned.sha256}"
  return None


def lay_out_pinned_files(dl_manager, files: Sequence[PinnedFile], root: pathlib.Path, name: str) -> pathlib.Path:
  """`root/name` holding every pinned file (at its `path`), each checked against its size and sha256.

  An existing `root/name` is never deleted or changed: it is used as it is when every pinned file in it
  matches, and refused otherwise. Else the files are fetched with `dl_manager.download({path: url})` (TFDS's
  DownloadManager or anything with that method), checked, and copied into a temporary folder that is renamed
  to `root/name` only when complete. Returns `root`.

  Raises:
    ConfigError: `root/name` exists and is not the pinned release (names the first file that differs).
    DataError: a fetched file differs from its pinned size or sha256 (names the URL); nothing is written.
  """
  target = root / name
  if target.exists() or target.is_symlink():
    problem = next(filter(None, (file_problem(root / f.path, f) for f in files)), None)
    if problem is None:
      return root
    raise ConfigError(f"{target} already exists and is not the pinned release ({problem}); it is left as it "
                      "is: move it away or choose another folder")
  fetched = dl_manager.download({f.path: f.url for f in files})
  for f in files:
    problem = file_problem(fetched[f.path], f)
    if problem:
      raise DataError(f"{f.url}: refused, the downloaded file does not match its pinned checksum ({problem})")
  root.mkdir(parents=True, exist_ok=True)
  staging = root / f".{name}.incomplete-{secrets.token_hex(4)}"
  try:
    for f in files:
      destination = staging / pathlib.PurePosixPath(f.path).relative_to(name)
      destination.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(fetched[f.path], destination)
    try:
      staging.rename(target)  # fails rather than replace a folder that appeared meanwhile
    except OSError:
      raise ConfigError(f"{target} appeared while downloading; it is left as it is: move it away or "
                        "choose another folder") from None
  finally:
    if staging.exists():
      shutil.rmtree(staging)  # only ever our own temporary folder
  return root


def split_generators(domain_data: DomainData, generate: Callable[[tuple[Example, ...]], Iterator]) -> dict:
  """One TFDS split per non-empty split of the domain (names made TFDS-safe)."""
  return {tfds_split_name(name): generate(examples)
          for name, examples in domain_data.splits.items() if examples}


def generate_examples(examples: tuple[Example, ...]) -> Iterator[tuple[int, dict]]:
  # Keys are positions, not uids: uids are unique per domain, but a key must also survive a split copy
  # (NLU++'s test split is a copy of its dev split), and positions keep the file order.
  for index, example in enumerate(examples):
    yield index, example_to_features(example)
