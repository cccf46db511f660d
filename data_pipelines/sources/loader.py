"""Grain loader over a prepared (array_record) TFDS dataset, behind the ``base`` contract.

The source of every named dataset (cremad, avmnist, …) once ``builders/prepare.py`` has
written its copy; the dataset's ``DatasetDef`` (``builders/registry.py``) supplies the splits
and the per-example preprocessing.

What a call ``batches(split, batch_size=B, seed, epoch, shuffle, start_batch, shard_index,
shard_count)`` yields:

1. the epoch's example order is ``base.epoch_order(n, seed, epoch, shuffle)`` — the same
   permutation every dataset in this package uses;
2. global batch ``b`` is ``order[b*B:(b+1)*B]``; this process gets its ``shard_index``-th
   slice of ``B / shard_count`` examples, for ``b`` from ``start_batch`` on (so a resumed run
   sees exactly the batches an uninterrupted one would);
3. each example is read by random access (``builder.as_data_source()``) and preprocessed;
   training examples are augmented with a generator seeded by ``(seed, epoch, index)``, so the
   augmentation depends on nothing else (not batching, sharding, resumption, worker count).

How: a Grain ``MapDataset`` whose element ``j`` is the ``j``-th batch of an endless sequence
of epochs, read with ``read_threads`` threads and, when ``num_workers > 0``, in that many
worker processes (``mp_prefetch``; batches come back in order). The pipeline stays alive
between calls: when the next call asks for the batch that follows (next epoch, same split and
settings) it continues, so worker processes start once per run instead of once per epoch and
the next epoch is prefetched during evaluation. Any other request starts a fresh pipeline.

Batches are dicts of plain numpy arrays (``label`` int32, features float32).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from data_pipelines.builders.registry import DatasetDef
from data_pipelines.sources.base import cfg, epoch_order, num_batches

AUGMENT_SALT = 0xA06
ENDLESS = 2 ** 40   # "length" of a pipeline: batches of as many epochs as anyone will run


def check_labels(label: np.ndarray, num_classes: int, records) -> None:
  """ValueError naming the record (and position, for per-position labels such as AVE's
  segment labels (B, T)) of the first label outside ``0..num_classes-1``, the classes the
  dataset's definition declares. The builders' ``ClassLabel`` features reject such labels when
  the dataset is prepared; this catches a copy prepared by other means, as each batch is
  read (the records are not all read before training: that would cost a pass over the data)."""
  label = np.asarray(label)
  bad = np.argwhere((label < 0) | (label >= num_classes))
  if len(bad):
    row, *position = (int(i) for i in bad[0])
    where = f" position {position}" if position else ""
    raise ValueError(f"record {int(records[row])} field 'label'{where} value "
                     f"{label[tuple(bad[0])]} is outside 0..{num_classes - 1} (the classes "
                     "the dataset declares)")


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator that augments record ``index`` in ``epoch`` of a run seeded ``seed``."""
  return np.random.default_rng([int(seed), int(epoch), int(index), AUGMENT_SALT])


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """Which records form each batch of one split under one set of ``batches()`` arguments."""

  n: int
  batch_size: int
  seed: int
  shuffle: bool
  drop_remainder: bool
  shard_index: int
  shard_count: int
  augment: bool

  @property
  def num_batches(self) -> int:
    return num_batches(self.n, self.batch_size, self.drop_remainder)

  @property
  def epoch_dependent(self) -> bool:
    """Whether batches differ between epochs (shuffled order or augmentation)."""
    return self.shuffle or self.augment

  def indices(self, epoch: int, b: int) -> np.ndarray:
    """Record indices of this process's slice of global batch ``b`` of ``epoch``."""
    order = epoch_order(self.n, seed=self.seed, epoch=epoch, shuffle=self.shuffle)
    per_shard = self.batch_size // self.shard_count
    batch = order[b * self.batch_size:(b + 1) * self.batch_size]
    return batch[self.shard_index * per_shard:(self.shard_index + 1) * per_shard]

  def position(self, epoch: int, b: int) -> int:
    """Global position of batch ``b`` of ``epoch`` in the endless sequence of batches."""
    return (epoch if self.epoch_dependent else 0) * self.num_batches + b

  def locate(self, position: int) -> tuple[int, int]:
    """Inverse of :meth:`position`: ``(epoch, batch)``."""
    return divmod(position, self.num_batches)

  def same_batch(self, position: int, other: int) -> bool:
    """Whether two positions hold the same batch (any epoch, when epochs do not differ)."""
    if self.epoch_dependent:
      return position == other
    return position % self.num_batches == other % self.num_batches


@dataclasses.dataclass(frozen=True)
class BatchSource:
  """Grain source whose item ``j`` is the batch at position ``first + j`` of ``plan``."""

  source: Any
  plan: BatchPlan
  preprocess: Any
  first: int
  empty: Any   # the batch of an empty shard slice: {key: zero-length array}
  num_classes: int = 0   # > 0: every label is checked to lie in 0..num_classes-1

  def __len__(self) -> int:
    return ENDLESS

  def __getitem__(self, j: int) -> dict[str, np.ndarray]:
    epoch, b = self.plan.locate(self.first + int(j))
    examples = []
    for index in self.plan.indices(epoch, b):
      rng = example_rng(self.plan.seed, epoch, index) if self.plan.augment else None
      examples.append(self.preprocess(self.source[int(index)], train=self.plan.augment,
                                      rng=rng))
    if not examples:
      return dict(self.empty)
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    if self.num_classes:
      check_labels(batch["label"], self.num_classes, self.plan.indices(epoch, b))
    return batch


def _mark_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside an absl app, use their defaults."""
  from absl import flags  # noqa: PLC0415
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class Pipeline:
  """A live Grain iterator over a :class:`BatchSource` and the position it has reached."""

  def __init__(self, batch_source: BatchSource, *, num_workers: int, read_threads: int,
               prefetch_batches: int):
    import grain  # noqa: PLC0415
    ds = grain.MapDataset.source(batch_source).to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
    if num_workers > 0:
      _mark_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=num_workers, per_worker_buffer_size=max(1, prefetch_batches)))
    self.iterator = iter(ds)
    self.position = batch_source.first

  def next(self) -> dict[str, np.ndarray]:
    batch = next(self.iterator)
    self.position += 1
    return {k: np.array(v) for k, v in batch.items()}  # own the memory (not shared-mem views)

  def close(self) -> None:
    close = getattr(self.iterator, "close", None)
    if close is not None:
      close()


# The loader's settings in ``config.data`` and their defaults (configs/default.py's
# ``data_config`` declares them from here, so they can be set from the command line): Grain
# worker processes (0 reads in this process), reading threads per process, batches prefetched,
# and how many pipelines stay alive between calls. None of them changes a batch.
LOADER_DEFAULTS = dict(num_workers=0, read_threads=2, prefetch_batches=2, live_pipelines=4)
_MINIMUM = dict(num_workers=0, read_threads=1, prefetch_batches=0, live_pipelines=0)


def _count(data_config, name: str) -> int:
  """``data.<name>`` (a :data:`LOADER_DEFAULTS` setting) as an int, rejecting values below its
  minimum (a negative worker count would otherwise quietly read in this process)."""
  value, minimum = int(cfg(data_config, name, LOADER_DEFAULTS[name])), _MINIMUM[name]
  if value < minimum:
    raise ValueError(f"data.{name} must be >= {minimum}, got {value}")
  return value


class TfdsDataset:
  """The ``base`` dataset contract over a prepared TFDS directory.

  Args:
    builder_dir: ``data_dir/<name>/<version>`` (what ``tfds.builder_from_directory`` reads).
    definition: the dataset's :class:`~data_pipelines.builders.registry.DatasetDef`.
    data_config: ``config.data``; reads the :data:`LOADER_DEFAULTS` settings (``num_workers``:
      Grain worker processes, 0 reads in this process; ``read_threads``;
      ``prefetch_batches``; ``live_pipelines``: how many pipelines stay alive between calls)
      and the dataset's own fields.
    modalities: the modalities to produce (default: all of the dataset's).
  """

  def __init__(self, builder_dir: str, definition: DatasetDef, data_config=None,
               modalities: tuple[str, ...] | None = None):
    import tensorflow_datasets as tfds  # noqa: PLC0415
    self.name = definition.name
    self.definition = definition
    self.builder_dir = str(builder_dir)
    self.builder = tfds.builder_from_directory(self.builder_dir)
    self._sources = self.builder.as_data_source()
    self.modalities = tuple(modalities or definition.modalities)
    self.num_classes = int(definition.num_classes(data_config))
    self.label_shape = tuple(definition.label_shape(data_config))
    self.vocab_sizes, self.embeddings = definition.vocabulary(data_config, self.builder_dir)
    self.preprocess = definition.make_preprocess(data_config, self.modalities)
    # What the jitted steps apply to a batch first, on the device (uint8 frames -> floats).
    self.device_preprocess = getattr(self.preprocess, "device", None)
    self.num_workers = _count(data_config, "num_workers")
    self.read_threads = _count(data_config, "read_threads")
    self.prefetch_batches = _count(data_config, "prefetch_batches")
    self.live_pipelines = _count(data_config, "live_pipelines")
    self._spec = None
    self._pipelines: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def source(self, split: str):
    """The TFDS data source behind ``split`` (``val`` or ``dep`` may alias another split)."""
    stored = self.definition.tfds_split(split)
    if stored not in self._sources:
      valid = [s for s in ("train", "val", "dep", "test")
               if self.definition.tfds_split(s) in self._sources]
      raise ValueError(f"{self.name} has no split {split!r}; valid: {', '.join(valid)}")
    return self._sources[stored]

  def num_examples(self, split: str) -> int:
    return len(self.source(split))

  @property
  def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of one example (from the first training record, not augmented)."""
    if self._spec is None:
      source = self.source("train")
      if not len(source):
        raise ValueError(f"{self.name}: the train split of {self.builder_dir} is empty")
      example = self.preprocess(source[0], train=False, rng=None)
      self._spec = {k: (np.shape(v), np.asarray(v).dtype) for k, v in example.items()
                    if k != "label"}
    return self._spec

  def _empty_batch(self) -> dict[str, np.ndarray]:
    out = {k: np.zeros((0, *shape), dtype) for k, (shape, dtype) in self.spec.items()}
    dtype = np.float32 if self.num_classes == 1 else np.int32   # scores: a regression task
    out["label"] = np.zeros((0, *self.label_shape), dtype)
    return out

  def batches(self, split: str, *, batch_size: int, seed: int = 0, epoch: int = 0,
              shuffle: bool = False, drop_remainder: bool = False, start_batch: int = 0,
              shard_index: int = 0, shard_count: int = 1, augment: bool | None = None
              ) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's batches of ``batch_size // shard_count`` examples (the last one
    may be smaller without ``drop_remainder``). ``augment`` defaults to ``split == "train"``."""
    if batch_size % shard_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by shard_count {shard_count}")
    source = self.source(split)
    plan = BatchPlan(n=len(source), batch_size=batch_size, seed=int(seed), shuffle=bool(shuffle),
                     drop_remainder=bool(drop_remainder), shard_index=shard_index,
                     shard_count=shard_count,
                     augment=split == "train" if augment is None else bool(augment))
    if start_batch >= plan.num_batches:
      return
    key = (self.definition.tfds_split(split), plan)
    first = plan.position(epoch, start_batch)
    pipeline = self._acquire(key, source, plan, first)
    finished = False
    try:
      for _ in range(start_batch, plan.num_batches):
        yield pipeline.next()
      finished = True
    finally:
      self._release(key, pipeline, keep=finished)

  def _acquire(self, key, source, plan: BatchPlan, first: int) -> Pipeline:
    """The live pipeline for ``key`` if it stands at ``first``, else a new one. A pipeline in
    use is out of the cache, so two simultaneous passes never share one."""
    with self._lock:
      pipeline = self._pipelines.pop(key, None)
    if pipeline is not None:
      if plan.same_batch(pipeline.position, first):
        return pipeline
      pipeline.close()
    checked = self.num_classes if self.num_classes > 1 else 0   # scores have no classes
    return Pipeline(BatchSource(source, plan, self.preprocess, first, self._empty_batch(),
                                checked),
                    num_workers=self.num_workers, read_threads=self.read_threads,
                    prefetch_batches=self.prefetch_batches)

  def _release(self, key, pipeline: Pipeline, *, keep: bool) -> None:
    """Keeps a pipeline that finished its pass for the next call (closing the least recently
    used beyond ``live_pipelines``); closes one that was abandoned mid-pass."""
    evicted = []
    with self._lock:
      if keep and key not in self._pipelines and self.live_pipelines > 0:
        self._pipelines[key] = pipeline
        while len(self._pipelines) > self.live_pipelines:
          evicted.append(self._pipelines.popitem(last=False)[1])
      else:
        evicted.append(pipeline)
    for p in evicted:
      p.close()

  def close(self) -> None:
    """Stops every live pipeline (worker processes included)."""
    with self._lock:
      pipelines, self._pipelines = list(self._pipelines.values()), collections.OrderedDict()
    for p in pipelines:
      p.close()
