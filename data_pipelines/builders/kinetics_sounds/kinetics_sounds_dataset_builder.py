"""TFDS builder for Kinetics-Sounds as OGM-GE / BalanceBenchmark read it.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Users download the Kinetics-400 clips of the 31 Kinetics-Sounds classes, extract frames at
1 fps and filterbanks with the OGM-GE scripts, and rename the list files.

Splits: train = the first 90% of the train list, ``dep`` = its last 10%, test = the test list.
Clips whose spectrogram or frame folder is absent are dropped first and counted; a clip whose
spectrogram is unreadable (or shaped unlike the first clip's) or whose frames do not decode is
skipped with a warning and counted. Each example: ``audio`` (the stored array, float32),
``frames`` (the JPEG bytes in time order), ``label``, ``clip_id``.
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import images
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput, layout_error, load_array, tail_split
from data_pipelines.builders.kinetics_sounds import DEFINITION, NUM_CLASSES

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth

def read_list(path: str) -> list[tuple[str, int]]:
  """``[(clip, label)]``: first field the clip, last field its integer label (ValueError
  naming the file and line otherwise)."""
  out = []
  with open(path, encoding="utf-8-sig") as f:
    for lineno, line in enumerate(f, 1):
      fields = [x for x in re.split(r"[,\s]+", line.strip()) if x]
      if not fields:
        continue
      try:
        label = int(fields[-1])
      except ValueError:
        label = -1
      if len(fields) < 2 or not 0 <= label < NUM_CLASSES:
        raise ValueError(f"kinetics_sounds: {path} line {lineno}: expected 'clip ... label' "
                         f"with a label in 0..{NUM_CLASSES - 1}, got {line.strip()!r}")
      out.append((fields[0], label))
  return out


def paths(root: str, split: str, clip: str) -> tuple[str, str]:
  return (os.path.join(root, f"{split}_spec", clip + ".npy"),
          os.path.join(root, f"{split}-frames-1fps", clip))


class Builder(RawBuilder):
  """Kinetics-Sounds: filterbank audio and 1-fps JPEG frames; splits train / dep / test."""

  DEFINITION = DEFINITION
  DESCRIPTION = "Kinetics-Sounds (31 classes) as OGM-GE / BalanceBenchmark prepare it."
  HOMEPAGE = "https://github.com/GeWu-Lab/OGM-GE_CVPR2022"
  CITATION = """@inproceedings{arandjelovic2017look, title={Look, Listen and Learn},
author={Arandjelovic, Relja and Zisserman, Andrew}, booktitle={ICCV}, year={2017}}"""

  def _features(self):
    return tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes"),
        "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
        "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        "clip_id": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    present, missing = {}, []
    for split in ("train", "test"):
      items = read_list(os.path.join(root, f"{split}.txt"))
      here = [all(os.path.exists(p) for p in paths(root, split, c)) for c, _ in items]
      present[split] = [(split, c, y) for (c, y), ok in zip(items, here) if ok]
      missing += [c for (c, _), ok in zip(items, here) if not ok]
    self._missing(missing)
    if not present["train"]:
      raise layout_error(self.name, root, "has none of the clips train.txt lists",
                         DEFINITION.layout)
    self._audio_shape = None
    splits = tail_split(present["train"], present["test"])
    return self._generators(splits, functools.partial(self._generate_examples, root))

  def _example(self, root: str, source_split: str, clip: str, label: int) -> dict:
    spec_path, frames_dir = paths(root, source_split, clip)
    try:
      spec = np.asarray(load_array(spec_path, mmap=False), np.float32)
    except ValueError as e:
      raise CorruptInput(str(e)) from e
    if spec.ndim != 2 or not np.all(np.isfinite(spec)):
      raise CorruptInput(f"{spec_path}: expected a finite 2-D array, got shape {spec.shape}")
    if self._audio_shape is None:
      self._audio_shape = spec.shape
    elif spec.shape != self._audio_shape:
      raise CorruptInput(f"{spec_path}: shape {spec.shape} differs from the first clip's "
                         f"{self._audio_shape}")
    return {"audio": spec, "frames": images.read_frame_folder(frames_dir), "label": label,
            "clip_id": clip}

  def _generate_examples(self, root, split, items):
    return self._emit(split, ((f"{s}/{c}", (s, c, y)) for s, c, y in items),
                      lambda item: self._example(root, *item))
