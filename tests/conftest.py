"""Shared test fixtures: where the benchmark data, the reference-tool fixtures and the real weights live."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def _data_dir() -> pathlib.Path:
  # Absolute: tests link to it from temporary folders, where a relative path would dangle.
  return pathlib.Path(os.environ.get("MSP_DATA_DIR", SHARED_DIR / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The benchmark data (NLU++, CrossNER, TOPv2): $MSP_DATA_DIR or ../shared/data beside the repo."""
  path = _data_dir()
  if not path.is_dir():
    pytest.skip(f"benchmark data folder {path} is absent (set MSP_DATA_DIR to the folder holding "
                "nlupp/, crossner/ and topv2/)")
  return path


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  """Files written by the reference tools themselves (T5X checkpoints, the T5 vocabulary)."""
  path = SHARED_DIR / "fixtures"
  if not path.is_dir():
    pytest.skip(f"reference fixtures folder {path} is absent")
  return path
