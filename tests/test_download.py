"""`msp download`: real pinned checksums, an existing folder is never deleted, a checksum mismatch is refused,
and no network is one line within seconds.

Downloads go through a fake download manager that serves the shared benchmark files (the bytes the pinned
source commits hold); the no-network case runs the real downloader against a proxy that refuses connections.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from msp_jax import cli  # noqa: E402
from msp_jax.commands import download  # noqa: E402

FAMILIES = ("nlupp", "crossner", "topv2")


class _SharedDataDownloadManager:
  """No network: 'downloads' a pinned URL by copying the shared benchmark file the URL names.

  `damage` maps a layout path to bytes that replace the file's first byte (a corrupted download).
  """

  def __init__(self, data_dir: pathlib.Path, download_dir: pathlib.Path, damage: dict[str, bytes] | None = None):
    self.data_dir, self.download_dir, self.damage, self.urls = data_dir, download_dir, damage or {}, []

  def download(self, urls: dict[str, str]) -> dict[str, pathlib.Path]:
    by_url = {f.url: f for family in FAMILIES for f in download.builder_module(family).FILES}
    paths = {}
    for key, url in urls.items():
      self.urls.append(url)
      relative = by_url[url].path
      path = self.download_dir / relative
      path.parent.mkdir(parents=True, exist_ok=True)
      data = (self.data_dir / relative).read_bytes()
      if relative in self.damage:
        data = self.damage[relative] + data[1:]
      path.write_bytes(data)
      paths[key] = path
    return paths


def _run_download(capsys, family: str, data_root: pathlib.Path) -> tuple[int, list[str]]:
  capsys.readouterr()
  status = cli.main(["download", family, "--data-dir", str(data_root)])
  return status, capsys.readouterr().err.strip().splitlines()


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_network(monkeypatch, data_dir, tmp_path):
  """Every `msp download` in the test fetches through a `_SharedDataDownloadManager`; returns the list of
  managers made (so a test can see what was fetched) and a dict to fill with damaged files."""
  managers, damage = [], {}

  def make(directory, files):
    manager = _SharedDataDownloadManager(data_dir, tmp_path / "served", damage)
    managers.append(manager)
    return manager

  monkeypatch.setattr(download, "PinnedDownloader", make)
  return managers, damage


@pytest.mark.parametrize("family", FAMILIES)
def test_checksums_pin_every_shared_data_file_at_a_pinned_commit(family, data_dir):
  listed = {}
  for line in (data_dir / "SHA256SUMS").read_text().splitlines():
    digest, relative = line.split()
    if relative.startswith(family + "/"):
      listed[relative] = digest
  module = download.builder_module(family)
  pinned = {f.path: f for f in module.FILES}
  assert pinned.keys() == listed.keys()
  for relative, f in pinned.items():
    assert f.sha256 == listed[relative] == hashlib.sha256((data_dir / relative).read_bytes()).hexdigest()
    assert f.size == (data_dir / relative).stat().st_size
    assert f.url.startswith("https://raw.githubusercontent.com/") and f"/{module.COMMIT}/" in f.url
    assert f.url.endswith(pathlib.PurePosixPath(relative).name)


def test_download_lays_out_the_pinned_files_as_the_shared_folder(capsys, fake_network, data_dir, tmp_path):
  from msp_jax.data import catalog

  status, err = _run_download(capsys, "nlupp", tmp_path / "data")
  assert status == 0, err
  assert _tree(tmp_path / "data" / "nlupp") == _tree(data_dir / "nlupp")
  assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["nlupp"]  # no temporary folders left
  assert len(catalog.load_task_data("nlupp_hotels", tmp_path / "data").splits["validation"]) == 95


def test_an_existing_folder_with_other_files_is_refused_and_left_untouched(capsys, fake_network, tmp_path):
  managers, _ = fake_network
  mine = tmp_path / "data" / "nlupp"
  (mine / "data").mkdir(parents=True)
  (mine / "data" / "ontology.json").write_text('{"my": "edits"}')
  (mine / "notes.txt").write_text("keep me")
  before = _tree(mine)

  status, err = _run_download(capsys, "nlupp", tmp_path / "data")
  assert status == 2
  assert len(err) == 1 and err[0].startswith(f"error: {mine} already exists and is not the pinned release"), err
  assert "left as it is" in err[0]
  assert _tree(mine) == before
  assert not any(m.urls for m in managers)  # refused before fetching anything


def test_an_existing_folder_holding_the_pinned_files_is_kept_without_fetching(capsys, fake_network, data_dir,
                                                                               tmp_path):
  managers, _ = fake_network
  shutil.copytree(data_dir / "crossner", tmp_path / "data" / "crossner")
  (tmp_path / "data" / "crossner" / "my_notes.txt").write_text("mine")
  before = _tree(tmp_path / "data" / "crossner")
  status, err = _run_download(capsys, "crossner", tmp_path / "data")
  assert status == 0, err
  assert _tree(tmp_path / "data" / "crossner") == before
  assert not any(m.urls for m in managers)


def test_a_download_that_does_not_match_its_checksum_is_refused(capsys, fake_network, tmp_path):
  _, damage = fake_network
  damage["crossner/ner_data/ai/dev.txt"] = b"#"
  status, err = _run_download(capsys, "crossner", tmp_path / "data")
  assert status == 2
  assert len(err) == 1 and err[0].startswith("error: https://raw.githubusercontent.com/zliucr/CrossNER/"), err
  assert "ner_data/ai/dev.txt: refused, the downloaded file does not match its pinned checksum" in err[0]
  assert not (tmp_path / "data" / "crossner").exists()
  assert [p.name for p in (tmp_path / "data").iterdir()] == []  # nothing written


def test_no_network_is_one_line_within_seconds(capsys, monkeypatch, tmp_path):
  # A proxy on a closed local port: every connection is refused at once, whatever the machine's network.
  for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    monkeypatch.setenv(name, "http://127.0.0.1:9")
  for name in ("NO_PROXY", "no_proxy"):
    monkeypatch.delenv(name, raising=False)
  start = time.monotonic()
  status, err = _run_download(capsys, "topv2", tmp_path / "data")
  elapsed = time.monotonic() - start
  assert status == 2
  assert len(err) == 1 and err[0].startswith("error: cannot download https://raw.githubusercontent.com/"), err
  assert "needs access to raw.githubusercontent.com" in err[0]
  assert elapsed < 30, elapsed
  assert not (tmp_path / "data" / "topv2").exists()


def test_a_data_dir_that_is_a_file_is_one_line(capsys, fake_network, tmp_path):
  (tmp_path / "data").write_text("not a folder")
  status, err = _run_download(capsys, "nlupp", tmp_path / "data")
  assert status == 2
  assert err == [f"error: --data-dir {tmp_path / 'data'} is a file; it must be a folder (created if missing)"]
