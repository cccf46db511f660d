"""TFDS builder for AV-MNIST in MultiBench's layout, as the AGM code reads it.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Splits as the released AGM code (``dataloader/AVMNIST_loader.py``): train and test keep the
first 90% of their arrays; ``dep`` is the last 10% of train followed by the last 10% of test.
Examples with non-finite values or a label outside 0..9 are skipped with a warning and counted.
Values are stored as float32 as found (the loader scales them by 1/255).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.avmnist import AUDIO_SHAPE, DEFINITION, IMAGE_SHAPE, NUM_CLASSES

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput, agm_split, load_array


def read_split(root: str, split: str) -> dict[str, np.ndarray]:
  """The three arrays of ``split`` (memory-mapped), checked for matching lengths and shapes."""
  paths = {"image": f"image/{split}_data.npy", "audio": f"audio/{split}_data.npy",
           "label": f"{split}_labels.npy"}
  arrays = {k: load_array(os.path.join(root, p)) for k, p in paths.items()}
  n = len(arrays["label"])
  for k, p in paths.items():
    if len(arrays[k]) != n:
      raise ValueError(f"avmnist: {os.path.join(root, p)} has {len(arrays[k])} rows but "
                       f"{paths['label']} has {n}")
  image_shape = arrays["image"].shape[1:]
  if image_shape not in ((784,), IMAGE_SHAPE):
    raise ValueError(f"avmnist: {os.path.join(root, paths['image'])} rows have shape "
                     f"{image_shape}; expected (784,) or {IMAGE_SHAPE}")
  if arrays["audio"].shape[1:] != AUDIO_SHAPE:
    raise ValueError(f"avmnist: {os.path.join(root, paths['audio'])} rows have shape "
                     f"{arrays['audio'].shape[1:]}; expected {AUDIO_SHAPE}")
  return arrays


def make_example(arrays: dict, i: int) -> dict:
  image = np.asarray(arrays["image"][i], np.float32).reshape(IMAGE_SHAPE)
  audio = np.asarray(arrays["audio"][i], np.float32)
  label = np.asarray(arrays["label"][i]).reshape(-1)[0]
  if not (np.all(np.isfinite(image)) and np.all(np.isfinite(audio))):
    raise CorruptInput("non-finite values")
  if label != int(label) or not 0 <= int(label) < NUM_CLASSES:
    raise CorruptInput(f"label {label} outside 0..{NUM_CLASSES - 1}")
  return {"image": image, "audio": audio, "label": int(label)}


class Builder(RawBuilder):
  """AV-MNIST: MNIST image + spoken-digit spectrogram; splits train / dep / test."""

  DEFINITION = DEFINITION
  DESCRIPTION = "AV-MNIST (MultiBench): MNIST digits paired with spoken-digit spectrograms."
  HOMEPAGE = "https://github.com/pliang279/MultiBench"
  CITATION = """@inproceedings{liang2021multibench, title={MultiBench: Multiscale Benchmarks for
Multimodal Representation Learning}, author={Liang, Paul Pu and others}, booktitle={NeurIPS
Datasets and Benchmarks}, year={2021}}"""

  def _features(self):
    return tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=AUDIO_SHAPE, dtype=np.float32),
        "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
        "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
    })

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    arrays = {s: read_split(root, s) for s in ("train", "test")}
    refs = {s: [(s, i) for i in range(len(arrays[s]["label"]))] for s in arrays}
    splits = agm_split(refs["train"], refs["test"])
    return self._generators(splits, functools.partial(self._generate_examples, arrays))

  def _generate_examples(self, arrays, split, items):
    return self._emit(split, ((f"{s}/{i}", (s, i)) for s, i in items),
                      lambda ref: make_example(arrays[ref[0]], ref[1]))
