"""Random inputs of a named dataset's shapes, with no files (``config.data.synthetic=True``).

For smoke tests and benchmarks: every split has ``synthetic_examples`` (64) examples whose
arrays are standard-normal float32 (integer dtypes: small integers), ``"<m>_lengths"`` uniform
in ``1..L`` and labels uniform in ``0..K-1``. Example ``i`` of a split depends only on
``(data_seed, split, i)``, and batches follow ``base.epoch_order`` like every other dataset.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterator, Mapping

import numpy as np

from data_pipelines.base import SPLITS, epoch_order, num_batches


def _split_code(split: str) -> int:
  return zlib.crc32(split.encode())


@dataclasses.dataclass
class RandomDataset:
  """The ``base`` contract over generated examples (see the module docstring)."""

  name: str
  modalities: tuple[str, ...]
  num_classes: int
  spec: Mapping[str, tuple[tuple[int, ...], np.dtype]]
  examples_per_split: int = 64
  data_seed: int = 0

  def num_examples(self, split: str) -> int:
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return self.examples_per_split

  def example(self, split: str, index: int) -> dict[str, np.ndarray]:
    stored = "dep" if split == "val" else split
    rng = np.random.default_rng([int(self.data_seed), _split_code(stored), int(index)])
    out = {}
    for key, (shape, dtype) in self.spec.items():
      dtype = np.dtype(dtype)
      if key.endswith("_lengths"):
        length = self.spec[key[:-len("_lengths")]][0][0]
        out[key] = rng.integers(1, length + 1, size=shape).astype(dtype)
      elif np.issubdtype(dtype, np.integer):
        out[key] = rng.integers(0, 100, size=shape).astype(dtype)
      else:
        out[key] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    out["label"] = np.int32(rng.integers(0, self.num_classes))
    return out

  def batches(self, split: str, *, batch_size: int, seed: int = 0, epoch: int = 0,
              shuffle: bool = False, drop_remainder: bool = False, start_batch: int = 0,
              shard_index: int = 0, shard_count: int = 1, augment: bool | None = None
              ) -> Iterator[dict[str, np.ndarray]]:
    del augment
    if batch_size % shard_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by shard_count {shard_count}")
    n = self.num_examples(split)
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    per_shard = batch_size // shard_count
    for b in range(start_batch, num_batches(n, batch_size, drop_remainder)):
      idx = order[b * batch_size:(b + 1) * batch_size]
      idx = idx[shard_index * per_shard:(shard_index + 1) * per_shard]
      examples = [self.example(split, i) for i in idx]
      if examples:
        yield {k: np.stack([e[k] for e in examples]) for k in examples[0]}
