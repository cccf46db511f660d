"""Random inputs of a dataset's shapes, with no files (``config.data.synthetic=True``).

For smoke tests and benchmarks. :func:`random_batch` draws one batch (or one example) of a
``spec``: float arrays standard-normal float32 (cast to the spec's dtype), uint8 arrays
(image pixels) uniform in ``0..255``, other integer arrays small integers in ``0..99``,
``"<m>_lengths"`` companions at the full sequence length ``L`` (the modality's first axis; or
uniform in ``1..L``) and ``"label"`` int32 uniform in ``0..K-1``.

:class:`RandomDataset` is the ``base`` contract over such examples: every split has
``synthetic_examples`` (64) of them, with lengths uniform in ``1..L``. Example ``i`` of a split
depends only on ``(data_seed, split, i)``, and batches follow ``base.epoch_order`` like every
other dataset. A dataset's ``finish`` hook (``DatasetDef.synthetic_finish``) then makes the
example consistent where random draws would not be (AVE's AVPS target from its segment
labels; token ids above the reserved ones and padding after the lengths), and its
``vocab_sizes`` / ``embeddings`` are those a real copy would carry.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from data_pipelines.sources.base import SPLITS, epoch_order, num_batches

LENGTHS = "_lengths"


def random_batch(spec: Mapping[str, tuple[tuple[int, ...], np.dtype]], num_classes: int,
                 batch_size: int | None, seed=0, *, full_lengths: bool = True,
                 label_shape: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
  """Random arrays of ``spec`` (``{key: (shape, dtype)}``) plus ``"label"``.

  Args:
    spec: a dataset's ``spec``; a ``"<m>_lengths"`` key is a companion of modality ``m``.
    num_classes: labels are int32 in ``0..num_classes-1``.
    batch_size: the leading axis of every array; None draws one example (no batch axis, the
      label an ``np.int32`` scalar).
    seed: anything ``np.random.default_rng`` takes (an int, a sequence of ints, a Generator).
    full_lengths: ``"<m>_lengths"`` at the full sequence length (the default: every sequence
      complete); False draws them uniformly in ``1..L``.
    label_shape: one example's label shape (``()``; e.g. ``(10,)`` for per-segment labels).
  """
  rng = np.random.default_rng(seed)
  lead = () if batch_size is None else (int(batch_size),)
  out = {}
  for key, (shape, dtype) in spec.items():
    size, dtype = (*lead, *shape), np.dtype(dtype)
    if key.endswith(LENGTHS):
      length = spec[key[:-len(LENGTHS)]][0][0]
      if full_lengths:
        out[key] = np.full(size, length, dtype)
      else:
        out[key] = rng.integers(1, length + 1, size=size).astype(dtype)
    elif dtype == np.uint8:   # image pixels (frames the device normalises)
      out[key] = rng.integers(0, 256, size=size).astype(dtype)
    elif np.issubdtype(dtype, np.integer):
      out[key] = rng.integers(0, 100, size=size).astype(dtype)
    else:
      out[key] = rng.standard_normal(size, dtype=np.float32).astype(dtype)
  label = rng.integers(0, num_classes, size=(*lead, *label_shape)).astype(np.int32)
  out["label"] = label if label.ndim else label[()]
  return out


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
  label_shape: tuple[int, ...] = ()
  finish: Callable | None = None   # (example, rng) -> example; see DatasetDef.synthetic_finish
  vocab_sizes: dict = dataclasses.field(default_factory=dict)
  embeddings: dict = dataclasses.field(default_factory=dict)
  device_preprocess: Callable | None = None   # as the real dataset's (uint8 frames -> floats)

  def num_examples(self, split: str) -> int:
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return self.examples_per_split

  def example(self, split: str, index: int) -> dict[str, np.ndarray]:
    stored = "dep" if split == "val" else split
    rng = np.random.default_rng([int(self.data_seed), _split_code(stored), int(index)])
    example = random_batch(self.spec, self.num_classes, None, rng, full_lengths=False,
                           label_shape=self.label_shape)
    return example if self.finish is None else self.finish(example, rng)

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
