"""Metric writers: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping


def _clean(value):
  value = float(value)
  return value if math.isfinite(value) else None if math.isnan(value) else str(value)


def truncate_after(path: str, step: int) -> None:
  """Drops lines logged after ``step`` (a resumed run writes them again)."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError):   # a half-written last line of a killed run
        continue
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes metric lines; a no-op on every process but the first (``enabled=False``)."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    if resume_step is not None:
      truncate_after(self.path, resume_step)
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415 - slow import, primary only
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      self._tb = None

  def write(self, step: int, epoch: int, split: str, metrics: Mapping[str, float]) -> dict:
    line = {"step": int(step), "epoch": int(epoch), "split": split}
    line.update({k: _clean(v) for k, v in metrics.items()})
    if not self.enabled:
      return line
    with open(self.path, "a") as f:
      f.write(json.dumps(line) + "\n")
    if self._tb is not None:
      for k in metrics:
        if isinstance(line[k], float):
          self._tb.add_scalar(f"{split}/{k}", line[k], step)
      self._tb.flush()
    return line

  def close(self):
    if self._tb is not None:
      self._tb.close()
