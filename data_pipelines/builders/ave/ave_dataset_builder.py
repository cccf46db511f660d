"""TFDS builder for AVE from the PSP feature files, with video-level labels.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Splits train / val / test follow the order files. The AGM code trains AVE as segment-level
localisation; this builder stores each video with its event class (the most frequent
non-background segment label: an AVE video holds one event) as ``label`` for the
video-level classification the trainer does, and keeps the per-segment labels
(``segment_labels``, 0..28 with 28 = background) for other uses. Videos with no event segment
or with non-finite features are skipped with a warning and counted.
"""

from __future__ import annotations

import functools
import os

import h5py
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.ave import AUDIO_SHAPE, CLASSES, DEFINITION, SEGMENTS, VISUAL_SHAPE

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput

SPLIT_FILES = {"train": "train_order.h5", "val": "val_order.h5", "test": "test_order.h5"}


def open_h5(path: str, key: str):
  """The dataset ``key`` of the h5 file at ``path`` (ValueError naming both if absent)."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
  if key not in f:
    raise ValueError(f"{path}: has no dataset {key!r} (it has {list(f.keys())})")
  return f[key]


def video_label(segment_onehot: np.ndarray) -> int:
  """Event class of a video from its (10, 29) one-hot segment labels (CorruptInput if none)."""
  counts = np.asarray(segment_onehot, np.float64)[:, :len(CLASSES)].sum(axis=0)
  if counts.max() <= 0:
    raise CorruptInput("no event segment")
  return int(np.argmax(counts))


class Builder(RawBuilder):
  """AVE: per-segment VGGish / VGG-19 features; video-level event labels."""

  DEFINITION = DEFINITION
  DESCRIPTION = "AVE audio-visual events (PSP's VGGish / VGG-19 features), video-level labels."
  HOMEPAGE = "https://sites.google.com/view/audiovisualresearch"
  CITATION = """@inproceedings{tian2018audio, title={Audio-Visual Event Localization in
Unconstrained Videos}, author={Tian, Yapeng and others}, booktitle={ECCV}, year={2018}}"""

  def _features(self):
    return tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=AUDIO_SHAPE, dtype=np.float32),
        "visual": tfds.features.Tensor(shape=VISUAL_SHAPE, dtype=np.float32),
        "segment_labels": tfds.features.Tensor(shape=(SEGMENTS,), dtype=np.int32),
        "label": tfds.features.ClassLabel(names=list(CLASSES)),
    })

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    labels_file = "right_labels.h5" if os.path.exists(os.path.join(root, "right_labels.h5")) \
        else "labels.h5"
    data = {"audio": open_h5(os.path.join(root, "audio_feature.h5"), "avadataset"),
            "visual": open_h5(os.path.join(root, "visual_feature.h5"), "avadataset"),
            "labels": open_h5(os.path.join(root, labels_file), "avadataset")}
    n = len(data["labels"])
    for k, expected in (("audio", AUDIO_SHAPE), ("visual", VISUAL_SHAPE)):
      if data[k].shape[1:] != expected or len(data[k]) != n:
        raise ValueError(f"ave: {data[k].file.filename} holds {data[k].shape}; expected "
                         f"({n}, {', '.join(map(str, expected))})")
    orders = {}
    for split, name in SPLIT_FILES.items():
      order = np.asarray(open_h5(os.path.join(root, name), "order")[()]).reshape(-1)
      if len(order) and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"ave: {os.path.join(root, name)} holds indices outside 0..{n - 1}")
      orders[split] = [int(i) for i in order]
    return self._generators(orders, functools.partial(self._generate_examples, data))

  def _generate_examples(self, data, split, order):
    def make(i):
      audio = np.asarray(data["audio"][i], np.float32)
      visual = np.asarray(data["visual"][i], np.float32)
      if not (np.all(np.isfinite(audio)) and np.all(np.isfinite(visual))):
        raise CorruptInput("non-finite features")
      onehot = np.asarray(data["labels"][i])
      return {"audio": audio, "visual": visual, "label": video_label(onehot),
              "segment_labels": np.argmax(onehot, axis=1).astype(np.int32)}
    return self._emit(split, ((f"{p}:{i}", i) for p, i in enumerate(order)), make)
