"""Per-example transforms from a stored record to the arrays a batch holds.

A preprocessor is a frozen dataclass (picklable, so Grain's worker processes can run it) called
as ``preprocess(record, train=..., rng=...)``: ``record`` is the dict a TFDS data source
returns, ``rng`` a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)`` (None when
not augmenting). It returns the requested modalities, their ``"<m>_lengths"`` companions and
``"label"`` (int32).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.builders import images
from data_pipelines.builders.registry import frames_spec
from data_pipelines.sources.base import cfg


def _label(record, mode: str) -> np.int32:
  if mode == "label":
    return np.int32(record["label"])
  if mode == "sentiment7":
    return np.int32(sentiment_class7(float(record["sentiment"])))
  raise ValueError(f"unknown label mode {mode!r}; valid: label, sentiment7")


def sentiment_class7(a: float) -> int:
  """CMU-MOSEI sentiment in [-3, 3] -> 7 classes, with the AGM code's bins (3 means exactly 0)."""
  if a < -2:
    return 0
  if a < -1:
    return 1
  if a < 0:
    return 2
  if a == 0:
    return 3
  if a <= 1:
    return 4
  if a <= 2:
    return 5
  return 6


@dataclasses.dataclass(frozen=True)
class FramesPreprocess:
  """A stored spectrogram (``"audio"``, passed through as float32) and stored JPEG frames
  (``"frames"``) turned into ``visual`` ``(num_frames, size, size, 3)`` uint8 (augmented in
  training). The float conversion and ImageNet normalisation are :meth:`device`, which the
  trainer's jitted steps apply on the accelerator (``dataset.device_preprocess``): the host
  does a quarter of the copying and the transfer is a quarter of the bytes."""

  modalities: tuple[str, ...]
  num_frames: int = 1
  frame_sampling: str = "fixed"
  image_size: int = images.SIZE

  def __call__(self, record, *, train: bool, rng=None) -> dict:
    out = {}
    for m in self.modalities:
      if m == "audio":
        out["audio"] = np.asarray(record["audio"], np.float32)
      elif m == "visual":
        out["visual"] = images.frames_input(record["frames"], self.num_frames,
                                            self.frame_sampling, train=train, rng=rng,
                                            size=self.image_size)
      else:
        raise ValueError(f"unknown modality {m!r}; valid: audio, visual")
    out["label"] = np.int32(record["label"])
    return out

  @staticmethod
  def device(batch: dict) -> dict:
    """The batch as the model reads it: uint8 ``visual`` frames normalised to float32
    (``images.normalise``; NumPy or JAX arrays, inside ``jit`` too)."""
    visual = batch.get("visual")
    if visual is None or visual.dtype != np.uint8:
      return batch
    return {**batch, "visual": images.normalise(visual)}


@dataclasses.dataclass(frozen=True)
class ArrayPreprocess:
  """Stored arrays passed through as float32, optionally scaled or averaged over axes.

  ``scale``: ``((modality, factor), …)``; ``mean_axes``: ``((modality, axes), …)`` (axes of
  the stored array, e.g. AVE's 7x7 grid); ``lengths``: modalities whose ``"<m>_lengths"``
  record field is passed on; ``label``: ``"label"`` or ``"sentiment7"``.
  """

  modalities: tuple[str, ...]
  scale: tuple = ()
  mean_axes: tuple = ()
  lengths: tuple[str, ...] = ()
  label: str = "label"

  def __call__(self, record, *, train: bool, rng=None) -> dict:
    del train, rng  # no augmentation for stored features
    scale, mean_axes = dict(self.scale), dict(self.mean_axes)
    out = {}
    for m in self.modalities:
      x = np.asarray(record[m], np.float32)
      if m in mean_axes:
        x = x.mean(axis=tuple(mean_axes[m]), dtype=np.float32)
      if m in scale:
        x = x * np.float32(scale[m])
      out[m] = x
      if m in self.lengths:
        out[f"{m}_lengths"] = np.int32(record[f"{m}_lengths"])
    out["label"] = _label(record, self.label)
    return out


def audio_frames(audio_shape: tuple[int, ...], *, num_frames: int, frame_sampling: str):
  """``(make_preprocess, synthetic_spec)`` of an audio-spectrogram + video-frames dataset whose
  ``data_config.num_frames`` and ``frame_sampling`` default to the given values."""

  def make_preprocess(data_config, modalities):
    return FramesPreprocess(
        modalities=tuple(modalities), num_frames=int(cfg(data_config, "num_frames", num_frames)),
        frame_sampling=str(cfg(data_config, "frame_sampling", frame_sampling)))

  def synthetic_spec(data_config) -> dict:
    return {"audio": (tuple(audio_shape), np.dtype(np.float32)),
            "visual": frames_spec(cfg(data_config, "num_frames", num_frames))}

  return make_preprocess, synthetic_spec
