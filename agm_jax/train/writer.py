"""Metric writers: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

from agm_jax.train import atomic


def _clean(value):
  value = float(value)
  return value if math.isfinite(value) else None if math.isnan(value) else str(value)


RESUME_ADVICE = ("the checkpoints are intact: free space or make the workdir writable, then "
                 "run the same command to resume")


def truncate_after(path: str, step: int) -> None:
  """Drops lines logged after ``step`` (a resumed run writes them again) and, with a warning,
  unreadable ones (the half-written last line of a run killed mid-append); the file is
  replaced atomically."""
  if not os.path.exists(path):
    return
  kept, bad = [], []
  with open(path, errors="replace") as f:
    for number, line in enumerate(f, 1):
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        bad.append(number)
  if bad:
    logging.warning("%s: dropped unreadable line(s) %s (a run killed while writing them)",
                    path, bad)
  try:
    atomic.write_text(path, "".join(kept))
  except OSError as e:
    raise atomic.storage_error(path, e, RESUME_ADVICE) from e


# A multi-seed run's layout (agm_jax/train/seeds.py): one directory per seed, kept here (no
# JAX import) for the report tool.
def seed_dir(workdir: str, seed: int) -> str:
  """Where seed ``seed`` of a multi-seed run in ``workdir`` writes its lines and summary."""
  return os.path.join(workdir, f"seed_{seed}")


def seed_dirs(workdir: str) -> list[str]:
  """The per-seed directories of a multi-seed workdir (by its top-level summary, else by the
  ``seed_<s>`` folders that hold a config.json), in seed order; [] for a single-seed one."""
  found = []
  if os.path.isdir(workdir):
    for name in os.listdir(workdir):
      path = os.path.join(workdir, name)
      if (name.startswith("seed_") and name[5:].lstrip("-").isdigit()
          and os.path.exists(os.path.join(path, "config.json"))):
        found.append((int(name[5:]), path))
  return [path for _, path in sorted(found)]


PENDING_FILE = "pending_metrics.json"
PENDING_KEEP = 4


def _read_pending(path: str) -> dict:
  try:
    with open(path) as f:
      records = json.load(f)
  except (OSError, ValueError):
    return {}
  return records if isinstance(records, dict) else {}


class MetricWriter:
  """Writes metric lines; a no-op on every process but the first (``enabled=False``)."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None,
               fields: Mapping[str, object] | None = None):
    """``fields``: constant fields of every line (a multi-seed run's ``seed``)."""
    self.enabled = enabled
    self.fields = dict(fields or {})
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
    line = {"step": int(step), "epoch": int(epoch), "split": split, **self.fields}
    line.update({k: _clean(v) for k, v in metrics.items()})
    if not self.enabled:
      return line
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(line) + "\n")
    except OSError as e:
      raise atomic.storage_error(f"{self.path} (step {step}, {split})", e, RESUME_ADVICE) from e
    if self._tb is not None:
      for k in metrics:
        if isinstance(line[k], float):
          self._tb.add_scalar(f"{split}/{k}", line[k], step)
      self._tb.flush()
    return line

  def save_pending(self, step: int, items: list[dict]) -> None:
    """Keeps the metrics of the steps not yet in a line (``items``, host floats) with the
    checkpoint of ``step``, so that a run resumed from it writes the same next line as one
    never stopped (``PENDING_FILE``, the last ``PENDING_KEEP`` checkpoints' records)."""
    if not self.enabled or not items:
      return
    path = os.path.join(os.path.dirname(self.path), PENDING_FILE)
    records = _read_pending(path)
    records[str(int(step))] = items
    records = dict(sorted(records.items(), key=lambda kv: int(kv[0]))[-PENDING_KEEP:])
    try:
      atomic.write_text(path, json.dumps(records))
    except OSError as e:
      raise atomic.storage_error(path, e, RESUME_ADVICE) from e

  def pending(self, step: int) -> list[dict]:
    """The metrics :meth:`save_pending` kept with the checkpoint of ``step`` (none: [])."""
    path = os.path.join(os.path.dirname(self.path), PENDING_FILE)
    return _read_pending(path).get(str(int(step)), [])

  def close(self):
    if self._tb is not None:
      self._tb.close()
