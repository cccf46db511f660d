"""The contract between data and trainer: a `Dataset` of named splits that yields numpy batches.

The trainer only ever sees this interface, never a dataset's name:

* ``modalities``: ordered tuple of modality names (the order fixes the Shapley bit order).
* ``num_classes``: labels are int32 in ``0 .. num_classes-1``, one per example or, for a
  per-position task, one per position (AVE's segment task: ``(B, 10)``). ``num_classes == 1``
  declares a regression task: the labels are float32 scores (CMU-MOSEI sentiment in [-3, 3])
  and the model has one output unit (:func:`is_regression`).
* ``spec``: ``{key: (shape_without_batch, dtype)}`` for every array in a batch except "label";
  modality keys plus optional companions such as ``"<modality>_lengths"`` (passed through
  unmasked by the subset machinery).
* ``num_examples(split)`` and ``batches(split, ...)``: an iterator of
  ``{key: np.ndarray, "label": np.ndarray}`` dicts. The order is a pure function of
  ``(seed, epoch)``, so a resumed run re-creates its position with ``start_batch``.

Splits: ``train``, ``val``, ``dep`` (fits the competition-strength probe), ``test``. A dataset
without its own validation split aliases ``val`` to ``dep``.

Also here, shared by every source: ``epoch_order`` (the one example order), ``ArrayDataset``
(the in-memory implementation) and ``cfg`` (how a source or a dataset definition reads a
field of ``config.data``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

SPLITS = ("train", "val", "dep", "test")


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """Example order for one epoch: a permutation that depends only on (seed, epoch)."""
  if not shuffle:
    return np.arange(n)
  rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
  return rng.permutation(n)


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
  return n // batch_size if drop_remainder else -(-n // batch_size)


def cfg(data_config, key: str, default):
  """``data_config.get(key, default)`` for ConfigDicts, dicts, and None (a None value reads
  as ``default`` too)."""
  if data_config is None:
    return default
  value = data_config.get(key, default)
  return default if value is None else value


def is_regression(dataset) -> bool:
  """Whether ``dataset``'s labels are real-valued scores (a regression task): it declares one
  output, ``num_classes == 1`` (one class would be no classification task)."""
  return int(dataset.num_classes) == 1


@dataclasses.dataclass
class ArrayDataset:
  """An in-memory dataset: ``arrays[split] = {key: array (N, ...), "label": (N,)}``; the labels
  are integer classes, or float scores with ``num_classes=1`` (:func:`is_regression`)."""

  name: str
  modalities: tuple[str, ...]
  num_classes: int
  arrays: Mapping[str, Mapping[str, np.ndarray]]

  def __post_init__(self):
    self.modalities = tuple(self.modalities)
    splits = dict(self.arrays)
    if "val" not in splits and "dep" in splits:
      splits["val"] = splits["dep"]
    self.arrays = splits
    for split, data in splits.items():
      score = np.issubdtype(np.asarray(data["label"]).dtype, np.floating)
      if score != is_regression(self):
        raise ValueError(f"{split} labels are {np.asarray(data['label']).dtype}: float scores "
                         f"go with num_classes=1 (regression), integer classes with "
                         f"num_classes > 1; got num_classes={self.num_classes}")

  @property
  def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    first = self.arrays["train"]
    return {k: (v.shape[1:], v.dtype) for k, v in first.items() if k != "label"}

  def num_examples(self, split: str) -> int:
    return len(self.arrays[split]["label"])

  def batches(self, split: str, *, batch_size: int, seed: int = 0, epoch: int = 0,
              shuffle: bool = False, drop_remainder: bool = False, start_batch: int = 0,
              shard_index: int = 0, shard_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches of ``batch_size // shard_count`` examples for this process's shard."""
    if batch_size % shard_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by shard_count {shard_count}")
    data = self.arrays[split]
    n = len(data["label"])
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    per_shard = batch_size // shard_count
    for b in range(start_batch, num_batches(n, batch_size, drop_remainder)):
      idx = order[b * batch_size:(b + 1) * batch_size]
      idx = idx[shard_index * per_shard:(shard_index + 1) * per_shard]
      yield {k: v[idx] for k, v in data.items()}
