"""AV-MNIST (10 digits; spoken-digit spectrogram + MNIST image): the load-side definition.

Inputs: ``audio`` (112, 112) and ``image`` (28, 28), float32 scaled by 1/255 as the AGM loader.
Splits: train / dep / test as the released AGM code (``val`` is ``dep``). The builder is
``avmnist_dataset_builder.Builder``.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.builders import preprocess
from data_pipelines.builders.registry import DatasetDef

AUDIO_SHAPE = (112, 112)
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

LAYOUT = """\
  RAW/                        MultiBench's AV-MNIST (github.com/pliang279/MultiBench, "avmnist";
                              the AGM README links the same archive)
    image/train_data.npy      (N, 784) or (N, 28, 28) MNIST digits, values 0..255
    image/test_data.npy
    audio/train_data.npy      (N, 112, 112) spoken-digit spectrograms, values 0..255
    audio/test_data.npy
    train_labels.npy          (N,) digits 0..9
    test_labels.npy"""


def make_preprocess(data_config, modalities):
  del data_config
  return preprocess.ArrayPreprocess(modalities=tuple(modalities),
                                    scale=tuple((m, 1 / 255) for m in modalities))


def synthetic_spec(data_config) -> dict:
  del data_config
  return {"audio": (AUDIO_SHAPE, np.dtype(np.float32)),
          "image": (IMAGE_SHAPE, np.dtype(np.float32))}


DEFINITION = DatasetDef(
    name="avmnist", modalities=("audio", "image"), split_aliases={"val": "dep"},
    layout=LAYOUT,
    required=("image/train_data.npy", "image/test_data.npy", "audio/train_data.npy",
              "audio/test_data.npy", "train_labels.npy", "test_labels.npy"),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: NUM_CLASSES)
