"""The TFDS base of the MultiBench affect-pickle builders (UR-Funny, CMU-MOSEI); see
``affect.py`` for what is read and how each example is processed."""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.affect import (
  MODALITIES,
  PICKLE_SPLITS,
  SOURCE_KEYS,
  aligned_sequences,
  example_id,
  read_pickle,
)
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput, layout_error


class AffectBuilder(RawBuilder):
  """Base for the MultiBench pickle builders: subclasses set ``PICKLES`` (accepted file names),
  ``extra_features`` and ``label_fields(raw_label)``."""

  PICKLES: tuple[str, ...] = ()

  def extra_features(self) -> dict:
    return {}

  def label_fields(self, raw_label: np.ndarray) -> dict:
    raise NotImplementedError

  def _features(self):
    seq = {m: tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes")
           for m in MODALITIES}
    lengths = {f"{m}_lengths": tfds.features.Scalar(dtype=np.int32) for m in MODALITIES}
    return tfds.features.FeaturesDict({
        **seq, **lengths, "label": tfds.features.ClassLabel(num_classes=2),
        "id": tfds.features.Text(), **self.extra_features()})

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    path = next((os.path.join(root, p) for p in self.PICKLES
                 if os.path.exists(os.path.join(root, p))), None)
    if path is None:
      raise layout_error(self.name, root, f"has no {' or '.join(self.PICKLES)}",
                         self.DEFINITION.layout)
    data = read_pickle(path)
    splits = {split: list(range(len(data[source]["labels"])))
              for split, source in PICKLE_SPLITS.items()}
    return self._generators(splits, functools.partial(self._generate_examples, data))

  def _example(self, data_split: dict, i: int) -> dict:
    rows = {m: data_split[SOURCE_KEYS[m]][i] for m in MODALITIES}
    seqs, length = aligned_sequences(rows)
    lengths = {f"{m}_lengths": length for m in MODALITIES}
    raw_label = np.asarray(data_split["labels"][i], np.float32).reshape(-1)
    if not len(raw_label) or not np.isfinite(raw_label[0]):
      raise CorruptInput(f"label {raw_label}")
    return {**seqs, **lengths, "id": example_id(data_split, i), **self.label_fields(raw_label)}

  def _generate_examples(self, data, split, items):
    data_split = data[PICKLE_SPLITS[split]]
    return self._emit(split, ((f"{split}/{i}", i) for i in items),
                      lambda i: self._example(data_split, i))
