"""TFDS builder for AVE from the PSP feature files, with segment and video labels.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Splits train / val / test follow the order files. Each video is stored with its per-segment
labels (``segment_labels``, 0..28 with 28 = background: the segment task the AGM code trains
with PSP, ``data.task="segment"``) and its event class (``label``, the most frequent
non-background segment label: an AVE video holds one event; ``data.task="video"``). Videos
with no event segment or with non-finite features are skipped with a warning and counted; AVE
was collected so that every video holds an event of at least 2 s, so the segment task loses
no real video to the first rule.

Official annotations. When ``manual_dir`` also holds AVE's ``Annotations.txt`` (and
``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt``), the builder derives each video's segment
labels from it — the seconds ``[StartTime, EndTime)`` get the event's class, the other
segments background — and compares them with right_labels.h5; ``right_labels.h5`` wins, the
annotations are only checked. PSP's files do not record which h5 row is which video: the
check assumes row ``i`` is the ``i``-th video of Annotations.txt (the order in which AVE's
released feature extraction walks it) and only when both hold the same number of videos;
the number of videos whose labels disagree is logged as a warning and kept in the prepared
copy's ``metadata.json`` (``annotation_mismatches``; a large count means the row order
assumption does not hold for these files). The split files are checked by count against the
order files (``annotation_split_counts``).
"""

from __future__ import annotations

import functools
import logging
import os

import h5py
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.ave import (
    ANNOTATION_CATEGORIES,
    AUDIO_SHAPE,
    BACKGROUND,
    CLASSES,
    DEFINITION,
    SEGMENTS,
    VISUAL_SHAPE,
)

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput

SPLIT_FILES = {"train": "train_order.h5", "val": "val_order.h5", "test": "test_order.h5"}
ANNOTATION_SPLITS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
logger = logging.getLogger("data_pipelines")


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


def read_annotations(path: str) -> list[tuple[int, str, int, int]]:
  """``(class, video_id, start, end)`` per line of an AVE annotation file
  (``Category&VideoID&Quality&StartTime&EndTime``; a header line starting with "Category" and
  blank lines are skipped). ValueError naming the file and line otherwise."""
  index = {name: i for i, name in enumerate(ANNOTATION_CATEGORIES)}
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      fields = line.strip().split("&")
      if fields == [""] or fields[0] == "Category":
        continue
      if len(fields) != 5 or fields[0] not in index:
        raise ValueError(f"{path}:{line_no}: expected Category&VideoID&Quality&StartTime&EndTime "
                         f"with one of AVE's 28 categories; got {line.strip()!r}")
      try:
        start, end = int(fields[3]), int(fields[4])
      except ValueError as e:
        raise ValueError(f"{path}:{line_no}: StartTime / EndTime are not integers") from e
      rows.append((index[fields[0]], fields[1], start, end))
  return rows


def annotation_segments(event: int, start: int, end: int) -> np.ndarray:
  """(10,) int32 segment labels: ``event`` on seconds ``[start, end)``, background elsewhere."""
  t = np.arange(SEGMENTS)
  return np.where((t >= start) & (t < end), event, BACKGROUND).astype(np.int32)


def annotation_mismatches(annotations, segment_labels: np.ndarray) -> int:
  """How many videos' stored segment labels (``(n, 10)``, row ``i`` = annotation ``i``)
  differ from those the annotations give."""
  derived = np.stack([annotation_segments(c, s, e) for c, _, s, e in annotations])
  return int(np.any(derived != segment_labels, axis=1).sum())


def check_annotations(root: str, labels, orders: dict[str, list[int]]) -> dict:
  """Cross-checks AVE's annotation files in ``root`` (if any) against the h5 labels and the
  order files; warns and returns the metadata entries (see the module docstring)."""
  path = os.path.join(root, "Annotations.txt")
  if not os.path.exists(path):
    return {}
  annotations = read_annotations(path)
  meta = {}
  if len(annotations) == len(labels):
    stored = np.argmax(np.asarray(labels[()]), axis=-1)
    meta["annotation_mismatches"] = mismatches = annotation_mismatches(annotations, stored)
    if mismatches:
      logger.warning("ave: %d of %d videos' segment labels in Annotations.txt differ from "
                     "right_labels.h5; the h5 labels are used", mismatches, len(labels))
  else:
    logger.warning("ave: Annotations.txt lists %d videos, the h5 files hold %d; segment labels "
                   "not compared (the h5 labels are used)", len(annotations), len(labels))
  counts = {}
  for split, name in ANNOTATION_SPLITS.items():
    if os.path.exists(os.path.join(root, name)):
      counts[split] = n = len(read_annotations(os.path.join(root, name)))
      if n != len(orders[split]):
        logger.warning("ave: %s lists %d videos, %s holds %d", name, n, SPLIT_FILES[split],
                       len(orders[split]))
  meta["annotation_split_counts"] = counts
  return meta


class Builder(RawBuilder):
  """AVE: per-segment VGGish / VGG-19 features; segment and video-level event labels."""

  DEFINITION = DEFINITION
  DESCRIPTION = "AVE audio-visual events (PSP's VGGish / VGG-19 features), segment labels."
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
    self.info.metadata.update(check_annotations(root, data["labels"], orders))
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
