"""Multi-process start-up: one process per host, joined by `jax.distributed.initialize`.

A run is single-process unless the environment says otherwise:

  MSP_COORDINATOR_ADDRESS=host:port  MSP_NUM_PROCESSES=N  MSP_PROCESS_ID=i   (all three, every host)
  MSP_DISTRIBUTED=auto                                                       (TPU pods, SLURM, Open MPI)

With `auto`, JAX reads the cluster's own description (TPU metadata, `SLURM_*`, `OMPI_*`); any of the three
`MSP_*` values that are set still take precedence. After `initialize()`, `jax.devices()` lists the devices of
every process, so `partitioning.make_mesh()` spans all hosts and the same program runs on each (SPMD).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax

from msp_jax.errors import ConfigError

ADDRESS_VAR = "MSP_COORDINATOR_ADDRESS"
NUM_PROCESSES_VAR = "MSP_NUM_PROCESSES"
PROCESS_ID_VAR = "MSP_PROCESS_ID"
MODE_VAR = "MSP_DISTRIBUTED"
MODES = ("auto", "off")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  """What to pass to `jax.distributed.initialize`; `None` fields are auto-detected by JAX (`auto` only)."""

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  auto: bool = False


def _int_setting(value: int | str | None, name: str) -> int | None:
  if value is None or isinstance(value, int):
    return value
  try:
    return int(value.strip())
  except ValueError:
    raise ConfigError(f"{name}={value!r} is not an integer") from None


def _check_address(address: str) -> None:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"{ADDRESS_VAR}={address!r} is not host:port (e.g. 10.0.0.1:1234, the address of "
                      "process 0 and a free port on it)")


def settings_from(coordinator_address: str | None = None, num_processes: int | str | None = None,
                  process_id: int | str | None = None,
                  environ: Mapping[str, str] | None = None) -> DistributedSettings | None:
  """The distributed settings from the arguments, else the `MSP_*` variables of `environ`; `None` means
  a single-process run. No side effects (`environ` defaults to `os.environ`; tests pass a dict).

  Raises ConfigError naming the variable for an incomplete or malformed setting.
  """
  environ = os.environ if environ is None else environ
  mode = environ.get(MODE_VAR, "").strip().lower()
  if mode not in ("",) + MODES:
    raise ConfigError(f"{MODE_VAR}={environ[MODE_VAR]!r} is not one of {MODES} (or unset)")
  if mode == "off":
    return None
  address = coordinator_address if coordinator_address is not None else environ.get(ADDRESS_VAR) or None
  count = _int_setting(num_processes if num_processes is not None else environ.get(NUM_PROCESSES_VAR) or None,
                       NUM_PROCESSES_VAR)
  index = _int_setting(process_id if process_id is not None else environ.get(PROCESS_ID_VAR) or None,
                       PROCESS_ID_VAR)
  given = {ADDRESS_VAR: address, NUM_PROCESSES_VAR: count, PROCESS_ID_VAR: index}
  if address is not None:
    _check_address(address)
  if count is not None and count < 1:
    raise ConfigError(f"{NUM_PROCESSES_VAR}={count} must be >= 1")
  if index is not None and index < 0:
    raise ConfigError(f"{PROCESS_ID_VAR}={index} must be >= 0")
  if count is not None and index is not None and index >= count:
    raise ConfigError(f"{PROCESS_ID_VAR}={index} must be below {NUM_PROCESSES_VAR}={count} "
                      f"(process ids run 0..{count - 1})")
  if mode == "auto":
    return DistributedSettings(address, count, index, auto=True)
  missing = [name for name, value in given.items() if value is None]
  if len(missing) == len(given):
    return None
  if missing:
    present = [name for name, value in given.items() if value is not None]
    raise ConfigError(f"{' and '.join(present)} set but {' and '.join(missing)} not: a multi-process run needs "
                      f"all of {ADDRESS_VAR}, {NUM_PROCESSES_VAR} and {PROCESS_ID_VAR} on every host, or "
                      f"{MODE_VAR}=auto where JAX detects the cluster (TPU pods, SLURM, Open MPI)")
  return DistributedSettings(address, count, index)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ: Mapping[str, str] | None = None) -> bool:
  """Joins this process to the others (`jax.distributed.initialize`) when the settings ask for it.

  Call it before any other JAX call (`jax.devices()`, a computation, a `device_put`): JAX fixes the device
  list on first use. Idempotent: a second call, or one after JAX was initialised elsewhere, does nothing.
  Returns whether this process is part of a multi-process run.
  """
  settings = settings_from(coordinator_address, num_processes, process_id, environ)
  if jax.distributed.is_initialized():
    return True
  if settings is None:
    return False
  if not settings.auto:
    # Explicit settings mean one process per host seeing all of its devices. JAX's cluster detection would
    # otherwise, under SLURM/Open MPI, narrow each process to the single GPU of its local task id.
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes, process_id=settings.process_id,
                               cluster_detection_method="deactivate")
    return True
  try:
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes, process_id=settings.process_id)
  except ValueError as e:  # JAX found no cluster description to fill the unset values from
    raise ConfigError(f"{MODE_VAR}=auto, but JAX detected no TPU pod, SLURM or Open MPI job here ({e}); set "
                      f"{ADDRESS_VAR}, {NUM_PROCESSES_VAR} and {PROCESS_ID_VAR} instead") from e
  return True


def is_coordinator() -> bool:
  """Whether this is process 0, the one that writes logs and summaries meant to exist once."""
  return jax.process_index() == 0
