"""Waveform reading and the log-magnitude spectrogram of the OGM-GE / AGM CREMA-D code.

The released code (librosa 0.10.1, as pinned by AGM's requirements) does, per clip:
load mono at 22,050 Hz, tile to 3 s, clip to [-1, 1], ``stft(n_fft=512, hop_length=353)``
(periodic Hann window, centred frames, zero padding), then ``log(|S| + 1e-7)``, which gives
(257, 188). Here the same steps are written with numpy/scipy and libsoxr (the ``soxr``
package): ``librosa.load``'s default resampler is ``soxr_hq``, called the same way (mono first,
then the output fixed to ``ceil(n · target / rate)`` samples), so the spectrograms equal
librosa's to float tolerance (checked against ``librosa.load`` when librosa is installed).
Clips shorter than 1 s are tiled as often as needed (the released code tiles three times,
which leaves such clips short).
"""

from __future__ import annotations

import math

import numpy as np
import soxr
from scipy import signal
from scipy.io import wavfile

from data_pipelines.builders.common import CorruptInput

SAMPLE_RATE = 22050
SECONDS = 3
N_FFT = 512
HOP = 353


def read_wav(path) -> tuple[np.ndarray, int]:
  """``(samples, rate)``: mono float32 in [-1, 1] (integer PCM scaled as libsndfile does).

  Raises ``CorruptInput`` for a file that is not a readable, non-empty wav.
  """
  try:
    rate, data = wavfile.read(path)
  except Exception as e:  # scipy raises ValueError, EOFError, struct errors…
    raise CorruptInput(f"unreadable wav {path}: {e}") from e
  data = np.asarray(data)
  if data.size == 0 or rate <= 0:
    raise CorruptInput(f"empty wav {path}")
  if data.dtype == np.uint8:
    x = (data.astype(np.float32) - 128.0) / 128.0
  elif np.issubdtype(data.dtype, np.integer):
    x = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
  else:
    x = data.astype(np.float32)
  if x.ndim == 2:
    x = x.mean(axis=1)
  if not np.all(np.isfinite(x)):
    raise CorruptInput(f"non-finite samples in {path}")
  return x, int(rate)


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
  """``librosa.resample(x, orig_sr=rate, target_sr=target)`` (librosa >= 0.10 defaults):
  libsoxr's high-quality mode, the output cut or zero-padded to ``ceil(len(x) · target /
  rate)`` samples."""
  if rate == target:
    return x.astype(np.float32)
  y = soxr.resample(np.asarray(x, np.float32), rate, target, quality="HQ")
  n = math.ceil(len(x) * target / rate)
  return np.pad(y[:n], (0, max(0, n - len(y)))).astype(np.float32)


def tile_and_clip(x: np.ndarray, length: int) -> np.ndarray:
  """Repeats ``x`` until it has ``length`` samples, cuts there, clips to [-1, 1]."""
  reps = max(1, math.ceil(length / len(x)))
  return np.clip(np.tile(x, reps)[:length], -1.0, 1.0)


def stft_magnitude(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
  """``|STFT|`` of shape ``(n_fft//2 + 1, 1 + len(x)//hop)``: centred frames (zero padded by
  ``n_fft//2`` on both sides) under a periodic Hann window, as ``librosa.stft`` (>= 0.10)."""
  padded = np.pad(x.astype(np.float64), n_fft // 2)
  num_frames = 1 + (len(padded) - n_fft) // hop
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:num_frames]
  window = signal.get_window("hann", n_fft, fftbins=True)
  return np.abs(np.fft.rfft(frames * window, axis=1)).T


def log_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
  """``log(|STFT| + 1e-7)`` as float32."""
  return np.log(stft_magnitude(x, n_fft, hop) + 1e-7).astype(np.float32)


def clip_spectrogram(samples: np.ndarray, rate: int) -> np.ndarray:
  """The CREMA-D audio input: 22,050 Hz, 3 s tiled and clipped, log-STFT -> (257, 188)."""
  x = tile_and_clip(resample(samples, rate), SAMPLE_RATE * SECONDS)
  return log_spectrogram(x)
