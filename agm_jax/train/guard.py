"""Run safety: stop on non-finite numbers without saving them, checkpoint on SIGTERM/SIGINT."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading


class NonFiniteError(RuntimeError):
  """A step produced NaN/inf; ``step``, ``key`` and the step's ``metrics`` say where."""

  def __init__(self, step: int, key: str, metrics: dict):
    self.step, self.key, self.metrics = step, key, metrics
    modality = key.split("/", 1)[1] if "/" in key else None
    where = f" (modality {modality!r})" if modality else ""
    super().__init__(f"non-finite {key} = {metrics.get(key)} at step {step}{where}; "
                     "stopped without saving it — the last good checkpoint is kept")


def first_nonfinite(items: list[dict], first_step: int):
  """``(step, key, metrics)`` of the first non-finite metric in consecutive steps, or None.
  Loss and per-modality values are named before derived ones (grad_norm)."""
  for offset, metrics in enumerate(items):
    keys = sorted(metrics, key=lambda k: (k == "grad_norm", k))
    for key in keys:
      if not math.isfinite(float(metrics[key])):
        return first_step + offset, key, {k: float(v) for k, v in metrics.items()}
  return None


class Preempted(Exception):
  """Raised after the checkpoint of a SIGTERM/SIGINT has been written."""


class SignalCheckpoint:
  """While active, the first SIGTERM/SIGINT asks the loop to checkpoint and stop; a second
  one exits at once."""

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None:
      print(f"\nsecond {signal.Signals(signum).name}: exiting now", file=sys.stderr, flush=True)
      os._exit(128 + signum)
    self.requested = signal.Signals(signum).name
    print(f"\n{self.requested} received: saving a checkpoint after this step "
          "(send it again to exit at once)", file=sys.stderr, flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
