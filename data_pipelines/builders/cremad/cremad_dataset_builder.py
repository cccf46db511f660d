"""TFDS builder for CREMA-D as OGM-GE and AGM use it.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Users get the wavs and videos from the CREMA-D repository (git-lfs) and extract the frames
with OGM-GE's script, or let this builder decode the ``.flv`` files.

Splits: the standard OGM-GE/AGM division shipped in ``splits/`` (6,698 train and 744 test
clips; ``classes.csv`` gives the label order NEU, HAP, SAD, FEA, DIS, ANG). As the AGM code,
clips absent from the download are dropped first (and counted), then train and test keep the
first 90% of their lists and ``dep`` is the last 10% of train followed by the last 10% of test.
A clip whose wav or frames cannot be decoded is skipped with a warning and counted.

Each example: ``audio`` (257, 188) float32 — 22,050 Hz, tiled to 3 s, clipped to [-1, 1],
``log(|STFT| + 1e-7)`` with n_fft 512, hop 353 (see ``data_pipelines/builders/audio.py``);
``frames``: every 1-fps frame as its original JPEG bytes, in time order (decoded, chosen and
resized at load time); ``label``; ``clip_id``.
"""

from __future__ import annotations

import csv
import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import audio, images, video
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import agm_split, layout_error
from data_pipelines.builders.cremad import CLASSES, DEFINITION, SPECTROGRAM_SHAPE

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth

SPLITS_DIR = os.path.join(os.path.dirname(__file__), "splits")
FRAME_DIR = "Image-01-FPS"


def read_split_file(path) -> list[tuple[str, int]]:
  """``[(clip_id, label_index)]`` from a ``clip_id,LABEL`` csv (a BOM is tolerated)."""
  out = []
  with open(path, encoding="utf-8-sig") as f:
    for row in csv.reader(f):
      if row:
        out.append((row[0].strip(), CLASSES.index(row[1].strip())))
  return out


def audio_path(root: str, clip: str) -> str | None:
  for folder in ("AudioWAV", "Audio"):
    path = os.path.join(root, folder, clip + ".wav")
    if os.path.exists(path):
      return path
  return None


def is_present(root: str, clip: str) -> bool:
  """The released code's test: a wav and a frame folder (here: or a video) exist."""
  return audio_path(root, clip) is not None and (
      os.path.isdir(os.path.join(root, FRAME_DIR, clip))
      or os.path.exists(os.path.join(root, "VideoFlash", clip + ".flv")))


def clip_frames(root: str, clip: str) -> list[bytes]:
  """The clip's 1-fps JPEG frames in time order, checked to decode (``CorruptInput``)."""
  folder = os.path.join(root, FRAME_DIR, clip)
  flv = os.path.join(root, "VideoFlash", clip + ".flv")
  if os.path.isdir(folder) and (os.listdir(folder) or not os.path.exists(flv)):
    return images.read_frame_folder(folder)
  return video.frames_per_second(flv)


def make_example(root: str, clip: str, label: int) -> dict:
  samples, rate = audio.read_wav(audio_path(root, clip))
  spec = audio.clip_spectrogram(samples, rate)
  assert spec.shape == SPECTROGRAM_SHAPE, spec.shape
  return {"audio": spec, "frames": clip_frames(root, clip), "label": label, "clip_id": clip}


class Builder(RawBuilder):
  """CREMA-D: log-STFT audio and 1-fps JPEG frames; splits train / dep / test."""

  DEFINITION = DEFINITION
  DESCRIPTION = "CREMA-D audio-visual emotion clips (6 classes) as OGM-GE / AGM use them."
  HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
  CITATION = """@article{cao2014crema, title={CREMA-D: Crowd-sourced emotional multimodal
actors dataset}, author={Cao, Houwei and others}, journal={IEEE Transactions on Affective
Computing}, year={2014}}"""

  def _features(self):
    return tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=SPECTROGRAM_SHAPE, dtype=np.float32),
        "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
        "label": tfds.features.ClassLabel(names=list(CLASSES)),
        "clip_id": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    lists = {s: read_split_file(os.path.join(SPLITS_DIR, f"{s}.csv")) for s in ("train", "test")}
    present = {s: [c for c in items if is_present(root, c[0])] for s, items in lists.items()}
    self._missing([c for s in lists for c, _ in lists[s] if not is_present(root, c)])
    if not present["train"] and not present["test"]:
      raise layout_error(self.name, root, "holds none of the clips of the standard split",
                         DEFINITION.layout)
    if any(not os.path.isdir(os.path.join(root, FRAME_DIR, c)) for s in present
           for c, _ in present[s]):
      video.require_av()  # some clips need their video decoded: fail now, with the hint
    splits = agm_split(present["train"], present["test"])
    return self._generators(splits, functools.partial(self._generate_examples, root))

  def _generate_examples(self, root, split, items):
    return self._emit(split, ((clip, (clip, label)) for clip, label in items),
                      lambda item: make_example(root, *item))
