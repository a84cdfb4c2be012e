"""Progress bars (steps, rate, ETA) and metric logs a user can plot (TensorBoard + a JSONL file)."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import tqdm


class Progress:
  """A tqdm bar on stderr showing count, rate and ETA; silent when disabled (tests, non-interactive logs)."""

  def __init__(self, total: int, *, initial: int = 0, unit: str = "step", desc: str | None = None,
               enabled: bool = True):
    self._bar = tqdm.tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled,
                          file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

  def update(self, n: int = 1) -> None:
    self._bar.update(n)

  def set_postfix(self, **values: Any) -> None:
    self._bar.set_postfix(values, refresh=False)

  def close(self) -> None:
    self._bar.close()


class MetricsLogger:
  """Scalars to TensorBoard (`tensorboard --logdir DIR`) and to `DIR/metrics.jsonl` (one record a line);
  writes nothing when disabled (the processes other than 0 of a multi-host run)."""

  def __init__(self, directory: str | pathlib.Path, enabled: bool = True):
    self.directory = pathlib.Path(directory)
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # Imported lazily: pulls in protobuf machinery.

    self.directory.mkdir(parents=True, exist_ok=True)
    self._writer = SummaryWriter(str(self.directory))
    self._jsonl = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")

  def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
    if not self.enabled:
      return
    for name, value in values.items():
      self._writer.add_scalar(f"{prefix}/{name}" if prefix else name, value, step)
    self._jsonl.write(json.dumps({"step": step, **{f"{prefix}/{k}" if prefix else k: v
                                                   for k, v in values.items()}}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._writer.close()
    self._jsonl.close()
