"""Frames at one per second from a video file, for clips whose frames were not extracted.

Keeps the first frame of every second (frame indices 0, fps, 2·fps, … with fps truncated to an
integer), which is what OGM-GE's ``video_preprocessing.py`` writes to ``Image-01-FPS/``.
Decoding needs the optional package ``av`` (PyAV): ``pip install av`` or
``pip install 'agm-jax[video]'``.
"""

from __future__ import annotations

import importlib

from data_pipelines.builders import images
from data_pipelines.builders.common import CorruptInput

INSTALL_HINT = ("decoding video needs the optional package 'av' (PyAV): pip install av "
                "(or pip install 'agm-jax[video]'), or extract the frames at 1 fps beforehand")


def require_av():
  """Imports PyAV or raises ImportError with the install hint."""
  try:
    return importlib.import_module("av")
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e


def frames_per_second(path, per_second: int = 1, quality: int = 95) -> list[bytes]:
  """JPEG bytes of ``per_second`` frames per second of the video at ``path``.

  Raises ``CorruptInput`` if the file cannot be decoded or has no frames, ImportError (with the
  install hint) if PyAV is missing.
  """
  av = require_av()
  out = []
  try:
    with av.open(str(path)) as container:
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or 1
      step = max(1, int(float(rate)) // per_second)
      for i, frame in enumerate(container.decode(stream)):
        if i % step == 0:
          out.append(images.encode_jpeg(frame.to_image(), quality))
  except Exception as e:  # av.error.* and IndexError for streamless files
    raise CorruptInput(f"undecodable video {path}: {e}") from e
  if not out:
    raise CorruptInput(f"video {path} has no frames")
  return out
