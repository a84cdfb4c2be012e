"""Ragged integer rows -> one right-padded array and its mask (token ids, attribute rows, ...).

Host-side NumPy: jitted steps take static shapes, so every caller pads to a length it chose (a bucket, a
configured maximum) before the call.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """ids [len(rows), length] int32 right-padded with `pad_id`, and mask [len(rows), length] int32 (1 = real).

  Rows longer than `length` are cut to their first `length` entries.
  """
  ids = np.full([len(rows), length], pad_id, np.int32)
  mask = np.zeros([len(rows), length], np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:length]
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask
