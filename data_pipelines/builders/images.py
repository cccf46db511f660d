"""Video frames: JPEG validation and decoding, frame choice, torchvision-style augmentation.

Train frames get ``RandomResizedCrop(224)`` (scale 0.08–1, aspect 3/4–4/3, ten tries, then a
centre crop) and a horizontal flip with probability 1/2; eval frames are resized to 224x224;
both are scaled to [0, 1] and normalised with the ImageNet mean and std, as the OGM-GE / AGM
transforms. Resizing is Pillow's bilinear filter (what torchvision uses on PIL images). Random
draws come from the ``numpy.random.Generator`` the caller passes, so a frame's augmentation
is a pure function of that generator's seed.
"""

from __future__ import annotations

import functools
import io
import math
import os

import numpy as np
from PIL import Image

from data_pipelines.builders.common import CorruptInput

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 224
FIXED_FRAME_SEED = 999   # the AGM CREMA-D loader seeds numpy with 999 before choosing a frame


def decode(data: bytes) -> Image.Image:
  """Encoded image bytes -> RGB PIL image (fully decoded). Raises ``CorruptInput``."""
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError…
    raise CorruptInput(f"undecodable image: {e}") from e


def check_jpeg(data: bytes, name: str = "") -> bytes:
  """Returns ``data`` if it decodes as an image, else raises ``CorruptInput`` naming it."""
  try:
    decode(data)
  except CorruptInput as e:
    raise CorruptInput(f"{name}: {e}") from e
  return data


def read_frame_folder(folder: str, suffixes=(".jpg", ".jpeg")) -> list[bytes]:
  """The encoded frames in ``folder``, in file-name order, each checked to decode.

  Raises ``CorruptInput`` naming the first bad frame, or if there are none.
  """
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(suffixes))
  if not names:
    raise CorruptInput(f"no frames in {folder}")
  out = []
  for name in names:
    with open(os.path.join(folder, name), "rb") as f:
      out.append(check_jpeg(f.read(), os.path.join(folder, name)))
  return out


def encode_jpeg(img: Image.Image | np.ndarray, quality: int = 95) -> bytes:
  """RGB image (PIL or HWC uint8) -> JPEG bytes."""
  if isinstance(img, np.ndarray):
    img = Image.fromarray(img)
  out = io.BytesIO()
  img.convert("RGB").save(out, format="JPEG", quality=quality)
  return out.getvalue()


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
                            ) -> tuple[int, int, int, int]:
  """``(left, top, w, h)`` of a crop covering a random fraction ``scale`` of the area with a
  random aspect ratio (log-uniform in ``ratio``); after ten misses, the largest centred crop
  whose aspect ratio is within ``ratio``."""
  area = width * height
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def train_frame(img: Image.Image, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
  """Random resized crop to ``size`` x ``size`` and a random horizontal flip -> HWC uint8."""
  left, top, w, h = random_resized_crop_box(img.width, img.height, rng)
  out = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
  if rng.random() < 0.5:
    out = out.transpose(Image.FLIP_LEFT_RIGHT)
  return np.asarray(out, np.uint8)


def eval_frame(img: Image.Image, size: int = SIZE) -> np.ndarray:
  """Resize to ``size`` x ``size`` (aspect ratio not kept, as ``Resize((224, 224))``)."""
  return np.asarray(img.resize((size, size), Image.BILINEAR), np.uint8)


def normalise(frames):
  """uint8 ``(..., 3)`` -> float32 ``(x / 255 - mean) / std``. NumPy or JAX arrays: the
  loader leaves frames uint8 and the jitted steps apply this on the device
  (``FramesPreprocess.device``)."""
  return ((frames.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


# The Kinetics-Sounds loaders' limits (``segments``): clips of at most 6 frames use frame 1;
# a training pick is at most frame 9 (1-based), index 8.
SEGMENTS_MIN_FRAMES = 6
SEGMENTS_MAX_TRAIN_INDEX = 8


def select_frames(n: int, k: int, mode: str, *, train: bool,
                  rng: np.random.Generator | None = None) -> np.ndarray:
  """Indices of the ``k`` frames (out of ``n`` stored, in time order) an example uses.

  * ``"fixed"``: the AGM CREMA-D loader's choice, ``RandomState(999).choice(n, k,
    replace=False)`` sorted — the same frame(s) every epoch, train and eval.
  * ``"segments"``: the Kinetics-Sounds loaders' choice (OGM-GE's, as BalanceBenchmark's
    ``KS_dataset.py`` reads it, with 1-based frame numbers ``t``): ``k`` segments of
    ``seg = n // k`` frames; in training a uniform frame of each (``t`` in
    ``[i·seg+1, i·seg+seg]``, at most 9), in evaluation ``t = i·seg + max(seg // 2, 1)``,
    i.e. index ``i·seg + max(seg // 2, 1) − 1``; a clip of at most 6 frames uses its first
    frame ``k`` times (the loaders' ``if file_num > 6 else 1``).

  Otherwise a clip with fewer than ``k`` frames repeats its frames cyclically.
  """
  if n <= 0:
    raise CorruptInput("clip has no frames")
  if mode == "segments":
    if n <= SEGMENTS_MIN_FRAMES:
      return np.zeros(k, np.int64)
    seg = n // k
    starts = np.arange(k) * seg
    if train:
      if rng is None:
        raise ValueError("segments frame sampling in training needs an rng")
      return np.minimum(starts + rng.integers(0, seg, size=k), SEGMENTS_MAX_TRAIN_INDEX)
    return starts + max(seg // 2, 1) - 1
  if n < k:
    return np.arange(k) % n
  if mode == "fixed":
    return np.array(_fixed_frames(n, k))
  raise ValueError(f"unknown frame_sampling {mode!r}; valid: fixed, segments")


@functools.lru_cache(maxsize=1024)
def _fixed_frames(n: int, k: int) -> tuple[int, ...]:
  """The AGM CREMA-D loader's frames of an ``n``-frame clip, computed once per ``(n, k)``:
  seeding a ``RandomState`` costs about 0.1 ms, 5% of an example's loading."""
  return tuple(np.sort(np.random.RandomState(FIXED_FRAME_SEED).choice(n, k, replace=False)))


DRAFT_REDUCTIONS = (8, 4, 2)   # PIL's JPEG draft mode: DCT scaling by 1/8, 1/4, 1/2


def draft_reduction(w: float, h: float, size: int = SIZE) -> int:
  """The largest JPEG DCT reduction (8, 4, 2 or 1) after which a ``w`` x ``h`` region still
  has at least ``size`` pixels in both dimensions: decoding at that scale and resizing to
  ``size`` only ever shrinks, as resizing the full decode does."""
  for d in DRAFT_REDUCTIONS:
    if w / d >= size and h / d >= size:
      return d
  return 1


def frame(data: bytes, *, train: bool, rng: np.random.Generator | None,
          size: int = SIZE) -> np.ndarray:
  """One encoded frame -> ``(size, size, 3)`` uint8: :func:`train_frame`'s random resized crop
  and flip in training, :func:`eval_frame`'s resize otherwise, decoding only what they need.

  The crop box is drawn from the image's size (read from its header) before decoding, with
  the same generator calls as :func:`train_frame`, so the crops' distribution is unchanged.
  A JPEG is then decoded in PIL's draft mode at the largest DCT reduction that leaves the box
  at least ``size`` pixels wide and high (:func:`draft_reduction`), and the box is resized
  from that image. For CREMA-D's 480x360 frames no crop allows a reduction (the output is the
  full decode's, bit for bit); larger frames (Kinetics-Sounds' 640x480 or more) decode at half
  scale or less when the crop is large, which changes pixels by the difference between
  resampling from the DCT-reduced image and from the full one: on a fabricated 1280x960
  frame a mean absolute difference of 1.0 of 255 over 200 training crops (at most 3.7) and
  1.1 for the evaluation resize, which took 26 ms instead of 47 (``tests/test_pipeline_speed.py``).
  """
  try:
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    box = random_resized_crop_box(width, height, rng) if train else (0, 0, width, height)
    d = draft_reduction(box[2], box[3], size) if img.format == "JPEG" else 1
    if d > 1:   # PIL picks the largest reduction whose result is at least this size
      img.draft("RGB", (-(-width // d), -(-height // d)))
    img.load()
    if img.mode != "RGB":
      img = img.convert("RGB")
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError…
    raise CorruptInput(f"undecodable image: {e}") from e
  sx, sy = img.width / width, img.height / height
  left, top, w, h = box
  out = img.resize((size, size), Image.BILINEAR,
                   box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
  if train and rng.random() < 0.5:
    out = out.transpose(Image.FLIP_LEFT_RIGHT)
  return np.asarray(out, np.uint8)


def frames_input(encoded, k: int, mode: str, *, train: bool,
                 rng: np.random.Generator | None, size: int = SIZE) -> np.ndarray:
  """Encoded frames of one clip -> uint8 ``(k, size, size, 3)``, augmented if ``train``
  (:func:`frame`); :func:`normalise` turns them into the model's float input."""
  idx = select_frames(len(encoded), k, mode, train=train, rng=rng)
  return np.stack([frame(encoded[int(i)], train=train, rng=rng, size=size) for i in idx])
