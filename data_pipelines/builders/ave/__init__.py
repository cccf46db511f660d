"""AVE (28 audio-visual events; VGGish audio + VGG-19 visual features): the load-side definition.

Inputs: ``audio`` (10, 128) float32 (one VGGish vector per 1-s segment); ``visual`` (10, 512)
float32 — the VGG-19 pool5 map of each segment averaged over its 7x7 grid — or, with
``visual_pool="none"``, the map itself (10, 7, 7, 512; what PSP reads). Splits: train / val /
test of PSP's order files; ``dep`` is ``val``. The builder is ``ave_dataset_builder.Builder``.

``data_config`` fields:

* ``task`` — "segment" (default; AVE's localisation task as the AGM code trains it with PSP):
  ``label`` int32 (10,), one class per segment in 0..28 (28 = background; 29 classes), and the
  companion ``avps_target`` float32 (10,) (:func:`avps_target`); or "video": ``label`` the
  video's event class (28 classes), no companion.
* ``visual_pool`` — "mean" (default) or "none".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.builders import preprocess
from data_pipelines.builders.registry import DatasetDef
from data_pipelines.sources.base import cfg

CLASSES = ("bell", "Male", "Bark", "aircraft", "car", "Female", "Helicopter", "Violin", "Flute",
           "Ukulele", "Fry food", "Truck", "Shofar", "Motorcycle", "guitar", "Train", "Clock",
           "Banjo", "Goat", "Baby", "Bus", "Chainsaw", "Cat", "Horse", "Toilet", "Rodents",
           "Accordion", "Mandolin")   # PSP's column order; column 28 is "background"
BACKGROUND = len(CLASSES)
# The same 28 events as AVE's Annotations.txt names them, in PSP's column order.
ANNOTATION_CATEGORIES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle",
    "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar",
    "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat",
    "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin")
TASKS = ("segment", "video")
OPTIONS = dict(task="segment", visual_pool="mean")
SEGMENTS = 10
AUDIO_SHAPE = (SEGMENTS, 128)
VISUAL_SHAPE = (SEGMENTS, 7, 7, 512)

LAYOUT = """\
  RAW/                  PSP's AVE features (github.com/jasongief/PSP_CVPR_2021, its data
                        download; the AGM AVE loader reads the same files)
    visual_feature.h5   "avadataset": (4143, 10, 7, 7, 512) VGG-19 pool5 map per 1-s segment
    audio_feature.h5    "avadataset": (4143, 10, 128) VGGish vector per segment
    right_labels.h5     "avadataset": (4143, 10, 29) one-hot segment labels (28 events, then
                        background); "labels.h5" is read if right_labels.h5 is absent
    train_order.h5      "order": indices of the training videos
    val_order.h5        "order": validation videos
    test_order.h5       "order": test videos
    Annotations.txt     optional, AVE's own annotations ("Category&VideoID&Quality&StartTime&
                        EndTime" lines after a header), with trainSet.txt / valSet.txt /
                        testSet.txt: cross-checked against right_labels.h5 when present"""


def visual_pool(data_config) -> str:
  pool = cfg(data_config, "visual_pool", OPTIONS["visual_pool"])
  if pool not in ("mean", "none"):
    raise ValueError(f"unknown ave visual_pool {pool!r}; valid: mean, none")
  return pool


def task(data_config) -> str:
  name = cfg(data_config, "task", OPTIONS["task"])
  if name not in TASKS:
    raise ValueError(f"unknown ave task {name!r}; valid: {', '.join(TASKS)}")
  return name


def avps_target(segment_labels: np.ndarray) -> np.ndarray:
  """PSP's audio-visual pair similarity target of one video, float32 (10,).

  The video's class is the lowest class index among its segment labels (its event; the
  background, 28, only when no segment holds an event); the target is ``1/count`` on the
  ``count`` segments of that class and 0 elsewhere (released ``dataloader/AVE_loader.py``,
  ``get_segment_wise_relation``). The released loader writes these entries into one batch
  buffer that it never zeroes, so its targets also carry stale ``1/n`` entries of earlier
  batches' videos; here each video's target is computed fresh.
  """
  labels = np.asarray(segment_labels)
  hit = labels == labels.min()
  return (hit / hit.sum()).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SegmentPreprocess:
  """The stored features (as ``ArrayPreprocess``) with per-segment labels: ``label`` int32
  (10,) from the record's ``segment_labels`` and ``avps_target`` (:func:`avps_target`)."""

  features: preprocess.ArrayPreprocess

  def __call__(self, record, *, train: bool, rng=None) -> dict:
    out = self.features(record, train=train, rng=rng)
    out["label"] = np.asarray(record["segment_labels"], np.int32)
    out["avps_target"] = avps_target(out["label"])
    return out


def make_preprocess(data_config, modalities):
  mean_axes = (("visual", (1, 2)),) if visual_pool(data_config) == "mean" else ()
  features = preprocess.ArrayPreprocess(modalities=tuple(modalities), mean_axes=mean_axes)
  return SegmentPreprocess(features) if task(data_config) == "segment" else features


def synthetic_spec(data_config) -> dict:
  visual = (SEGMENTS, 512) if visual_pool(data_config) == "mean" else VISUAL_SHAPE
  spec = {"audio": (AUDIO_SHAPE, np.dtype(np.float32)),
          "visual": (visual, np.dtype(np.float32))}
  if task(data_config) == "segment":
    spec["avps_target"] = ((SEGMENTS,), np.dtype(np.float32))
  return spec


def _finish_segments(example: dict, rng) -> dict:
  """A random segment-task example's ``avps_target``, from its random segment labels."""
  del rng
  return {**example, "avps_target": avps_target(example["label"])}


def synthetic_finish(data_config):
  return _finish_segments if task(data_config) == "segment" else None


DEFINITION = DatasetDef(
    name="ave", modalities=("audio", "visual"), split_aliases={"dep": "val"}, layout=LAYOUT,
    required=("visual_feature.h5", "audio_feature.h5", "right_labels.h5|labels.h5",
              "train_order.h5", "val_order.h5", "test_order.h5"),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: len(CLASSES) + (task(data_config) == "segment"),
    label_shape=lambda data_config: (SEGMENTS,) if task(data_config) == "segment" else (),
    synthetic_finish=synthetic_finish, options=OPTIONS)
