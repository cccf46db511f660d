"""Orbax checkpoints of the whole train state (params, BatchNorm statistics, optimiser state
with AGM's running mean, step, RNG). The data order is a function of (seed, epoch), so the
step alone fixes the data iterator's position."""

from __future__ import annotations

import logging
import os

import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

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
