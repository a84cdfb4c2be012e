"""Dataclass fields with a meaning for the stage cache (`msp_jax.run.cache.fingerprint`).

A finished stage is skipped when the fingerprint of its configuration is unchanged. Adding a field to a
configuration dataclass would change every fingerprint and re-run every finished stage, although a run that
leaves the new setting at its default computes exactly what it did before. A field declared with `new_setting`
is therefore left out of the fingerprint while it holds its default; any other value is hashed as usual.
"""

from __future__ import annotations

import dataclasses
from typing import Any

OMIT_WHEN_DEFAULT = "msp_fingerprint_omit_when_default"


def new_setting(default: Any) -> Any:
  """A dataclass field for a setting added after runs exist (module docstring); `default` must be hashable."""
  return dataclasses.field(default=default, metadata={OMIT_WHEN_DEFAULT: True})


def fingerprinted_fields(value: Any) -> dict[str, Any]:
  """A dataclass instance's fields as a dict, one level deep, without the `new_setting` fields at their
  defaults: what `dataclasses.asdict` gives for a dataclass with no such fields (nested values are left for
  the caller's JSON encoder)."""
  return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
          if not (f.metadata.get(OMIT_WHEN_DEFAULT) and getattr(value, f.name) == f.default)}
