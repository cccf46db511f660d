"""AVE (28 audio-visual events; VGGish audio + VGG-19 visual features): the load-side definition.

Inputs: ``audio`` (10, 128) float32 (one VGGish vector per 1-s segment); ``visual`` (10, 512)
float32 — the VGG-19 pool5 map of each segment averaged over its 7x7 grid — or, with
``visual_pool="none"``, the map itself (10, 7, 7, 512). Video-level labels (the event class).
Splits: train / val / test of PSP's order files; ``dep`` is ``val``. The builder is
``ave_dataset_builder.Builder``.

``data_config`` field: ``visual_pool`` — "mean" (default) or "none".
"""

from __future__ import annotations

import numpy as np

from data_pipelines.builders import preprocess
from data_pipelines.builders.registry import DatasetDef
from data_pipelines.sources.base import cfg

CLASSES = ("bell", "Male", "Bark", "aircraft", "car", "Female", "Helicopter", "Violin", "Flute",
           "Ukulele", "Fry food", "Truck", "Shofar", "Motorcycle", "guitar", "Train", "Clock",
           "Banjo", "Goat", "Baby", "Bus", "Chainsaw", "Cat", "Horse", "Toilet", "Rodents",
           "Accordion", "Mandolin")   # PSP's column order; column 28 is "background"
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
    test_order.h5       "order": test videos"""


def visual_pool(data_config) -> str:
  pool = cfg(data_config, "visual_pool", "mean")
  if pool not in ("mean", "none"):
    raise ValueError(f"unknown ave visual_pool {pool!r}; valid: mean, none")
  return pool


def make_preprocess(data_config, modalities):
  mean_axes = (("visual", (1, 2)),) if visual_pool(data_config) == "mean" else ()
  return preprocess.ArrayPreprocess(modalities=tuple(modalities), mean_axes=mean_axes)


def synthetic_spec(data_config) -> dict:
  visual = (SEGMENTS, 512) if visual_pool(data_config) == "mean" else VISUAL_SHAPE
  return {"audio": (AUDIO_SHAPE, np.dtype(np.float32)),
          "visual": (visual, np.dtype(np.float32))}


DEFINITION = DatasetDef(
    name="ave", modalities=("audio", "visual"), split_aliases={"dep": "val"}, layout=LAYOUT,
    required=("visual_feature.h5", "audio_feature.h5", "right_labels.h5|labels.h5",
              "train_order.h5", "val_order.h5", "test_order.h5"),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: len(CLASSES))
