"""Pieces every builder shares: error types, the AGM split rule, skip accounting, layout checks.

Kept free of TFDS so the load side (and tests) can use it without importing a builder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

logger = logging.getLogger("data_pipelines")

T = TypeVar("T")


class LayoutError(FileNotFoundError):
  """``manual_dir`` is missing, empty or not laid out as a builder expects."""


class CorruptInput(ValueError):
  """One raw example could not be read (bad wav, jpg, video, non-finite features…)."""


def prepare_command(name: str) -> str:
  """The shell command that prepares ``name`` (quoted in error messages)."""
  return (f"python -m data_pipelines.builders.prepare --dataset={name} "
          f"--manual_dir=/path/to/raw --data_dir=/path/to/tfds")


def layout_error(name: str, manual_dir, problem: str, layout: str) -> LayoutError:
  """A ``LayoutError`` that names the problem, the expected layout and the prepare command."""
  return LayoutError(
      f"{name}: manual_dir {str(manual_dir)!r} {problem}.\n"
      f"Expected layout:\n{layout.rstrip()}\n"
      f"Then prepare it with: {prepare_command(name)}\n"
      f"(or set config.data.manual_dir to that folder and config.data.data_dir to where the "
      f"prepared copy should go; load() prepares it on first use).")


def check_manual_dir(name: str, manual_dir, layout: str,
                     required: Sequence[str] = ()) -> str:
  """Returns ``manual_dir`` as a str; raises ``LayoutError`` if it is unset, missing, empty,
  or lacks one of the ``required`` entries (paths relative to it)."""
  if not manual_dir:
    raise layout_error(name, manual_dir, "is not set", layout)
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise layout_error(name, manual_dir, "does not exist", layout)
  if not os.listdir(manual_dir):
    raise layout_error(name, manual_dir, "is empty", layout)
  for entry in required:
    alternatives = entry.split("|")
    if not any(os.path.exists(os.path.join(manual_dir, a)) for a in alternatives):
      shown = " or ".join(repr(a) for a in alternatives)
      raise layout_error(name, manual_dir, f"has no {shown}", layout)
  return manual_dir


def agm_split(train: Sequence[T], test: Sequence[T], fraction: float = 0.9
              ) -> dict[str, list[T]]:
  """The released AGM code's split: train and test keep the first ``int(0.9 n)`` of their lists;
  "dep" is the rest of train followed by the rest of test."""
  cut_train, cut_test = int(len(train) * fraction), int(len(test) * fraction)
  return {"train": list(train[:cut_train]), "test": list(test[:cut_test]),
          "dep": list(train[cut_train:]) + list(test[cut_test:])}


def tail_split(train: Sequence[T], test: Sequence[T], fraction: float = 0.9
               ) -> dict[str, list[T]]:
  """train = first ``int(0.9 n)`` of the train list, dep = the rest of it, test unchanged."""
  cut = int(len(train) * fraction)
  return {"train": list(train[:cut]), "dep": list(train[cut:]), "test": list(test)}


@dataclasses.dataclass
class SkipLog:
  """Counts the raw examples a builder leaves out, by reason, and reports them."""

  name: str
  missing: list[str] = dataclasses.field(default_factory=list)
  corrupt: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  def skip(self, split: str, key: str, reason: str) -> None:
    """Records one corrupt example of ``split`` and logs a warning naming it."""
    self.corrupt.setdefault(split, []).append(key)
    logger.warning("%s/%s: skipped %s: %s", self.name, split, key, reason)

  def corrupt_count(self, split: str | None = None) -> int:
    if split is not None:
      return len(self.corrupt.get(split, []))
    return sum(len(v) for v in self.corrupt.values())

  def as_metadata(self) -> dict:
    return {"skipped_missing": list(self.missing),
            "skipped_corrupt": {k: list(v) for k, v in self.corrupt.items()}}

  def report_missing(self) -> None:
    if self.missing:
      print(f"{self.name}: {len(self.missing)} example(s) listed in the split files are absent "
            f"from manual_dir and were skipped (first: {self.missing[:3]})", flush=True)

  def report_split(self, split: str, written: int) -> None:
    print(f"{self.name}/{split}: wrote {written} example(s), skipped {self.corrupt_count(split)} "
          f"unusable", flush=True)


def load_array(path, *, mmap: bool = True):
  """``np.load`` of a ``.npy`` file (memory-mapped); ValueError naming the file if unreadable."""
  try:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
  except Exception as e:  # ValueError, OSError, EOFError…
    raise ValueError(f"{path}: not a readable .npy array ({e})") from e
