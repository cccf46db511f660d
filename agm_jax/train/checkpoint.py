"""Orbax checkpoints of the whole train state (params, BatchNorm statistics, optimiser state
with AGM's running mean, step, RNG). The data order is a function of (seed, epoch), so the
step alone fixes the data iterator's position."""

from __future__ import annotations

import logging
import os

import orbax.checkpoint as ocp

from agm_jax.train import atomic


class _OrbaxWriteErrors(logging.Filter):
  """Drops orbax's logged tracebacks of a failed write (an ``OSError`` in the chain), which
  ``Checkpointer.save`` reports as one ``StorageError`` line; once a write has failed
  (``stopping``), also its background threads' tracebacks as the process ends."""

  def __init__(self):
    super().__init__()
    self.stopping = False

  def filter(self, record: logging.LogRecord) -> bool:
    if "orbax" not in record.pathname or not record.exc_info:
      return True
    return not (self.stopping or atomic.find_os_error(record.exc_info[1]) is not None)


_FILTER = _OrbaxWriteErrors()


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    _FILTER.stopping = False
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    """Writes the checkpoint of ``step`` (orbax writes it under a temporary name and renames
    it when complete). A write that fails for lack of space or permission raises
    ``atomic.StorageError``; the checkpoints written before are left as they were."""
    if step in self._manager.all_steps():
      return
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_FILTER)
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state))
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - orbax wraps the OSError of a failed write
      cause = atomic.find_os_error(e)
      if cause is None:
        raise
      _FILTER.stopping = True
      last = [s for s in self._manager.all_steps() if s != step]
      kept = f"the last good checkpoint (step {max(last)}) is intact" if last else \
          "there is no earlier checkpoint"
      raise atomic.storage_error(f"the checkpoint of step {step} in {self.directory}", cause,
                                 f"{kept}: free space or make the workdir writable, then run "
                                 "the same command to resume") from e

  def restore(self, target):
    """Restores the newest readable checkpoint into ``target``'s structure; a corrupted or
    half-written one is skipped with a warning. Returns ``(state, step)`` or ``(target, None)``
    when there is nothing to restore."""
    for step in reversed(self.all_steps()):
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return state, step
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: try the previous one
        logging.warning("checkpoint at step %d is unreadable (%s: %s); trying an older one",
                        step, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return target, None

  def close(self):
    self._manager.close()
