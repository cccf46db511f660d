"""Tiny raw layouts of every dataset, written from random numbers, for tests and benchmarks.

Each ``write_<name>(root, ...)`` lays out ``root`` exactly as that dataset's builder in
``data_pipelines/builders/`` expects (see the builders' docstrings) and returns what it wrote
(clip ids or counts), so a test can predict the prepared split sizes. Nothing here is a real
recording; nothing in ``sources/`` or ``builders/`` uses it.
"""

from __future__ import annotations

import csv
import os
import pickle

import numpy as np
from PIL import Image
from scipy.io import wavfile

from data_pipelines.builders import ave, cremad

CREMAD_SPLITS = os.path.join(os.path.dirname(cremad.__file__), "splits")


def write_wav(path: str, seconds: float, rate: int = 16000, seed: int = 0) -> None:
  """Mono int16 noise with a tone, ``seconds`` long."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  x = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed % 500) * t) + 0.05 * rng.standard_normal(len(t))
  wavfile.write(path, rate, (np.clip(x, -1, 1) * 32767).astype(np.int16))


def write_jpg(path: str, height: int, width: int, seed: int = 0) -> None:
  """A smooth random picture (an upsampled 8x8 grid plus mild noise), so that it compresses
  and decodes like a video frame rather than like white noise."""
  rng = np.random.default_rng(seed)
  coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
  img = np.asarray(coarse.resize((width, height), Image.BILINEAR), np.int16)
  img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
  Image.fromarray(img).save(path, quality=90)


def write_flv(path: str, seconds: int = 2, fps: int = 10, size=(64, 48), seed: int = 0) -> None:
  """A tiny FLV (Sorenson codec) video; needs PyAV."""
  import av  # noqa: PLC0415
  rng = np.random.default_rng(seed)
  with av.open(path, "w", format="flv") as out:
    stream = out.add_stream("flv", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for _ in range(seconds * fps):
      img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
      for packet in stream.encode(av_frame(img)):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def av_frame(img: np.ndarray):
  import av  # noqa: PLC0415
  return av.VideoFrame.from_ndarray(img, format="rgb24")


def cremad_clips(split: str, count: int) -> list[tuple[str, str]]:
  """The first ``count`` ``(clip_id, label)`` rows of the shipped CREMA-D ``split`` list."""
  with open(os.path.join(CREMAD_SPLITS, f"{split}.csv"), encoding="utf-8-sig") as f:
    return [tuple(r) for r in csv.reader(f) if r][:count]


def write_cremad(root: str, *, num_train: int = 20, num_test: int = 10, frames: int = 3,
                 frame_size=(72, 96), seconds: float = 1.5, video_clips=(), corrupt_wav=(),
                 corrupt_jpg=(), no_frames=()) -> dict[str, list[str]]:
  """The first ``num_train`` / ``num_test`` clips of the standard lists, as wav + 1-fps jpgs.

  ``video_clips``: clips given as ``VideoFlash/<clip>.flv`` instead of frames (needs PyAV);
  ``corrupt_wav`` / ``corrupt_jpg``: clips whose wav / first frame is garbage; ``no_frames``:
  clips with an empty frame folder. Returns the clip ids written per split.
  """
  os.makedirs(os.path.join(root, "AudioWAV"), exist_ok=True)
  written = {}
  for split, count in (("train", num_train), ("test", num_test)):
    written[split] = []
    for i, (clip, _) in enumerate(cremad_clips(split, count)):
      seed = (0 if split == "train" else 5000) + i
      wav = os.path.join(root, "AudioWAV", clip + ".wav")
      if clip in corrupt_wav:
        with open(wav, "wb") as f:
          f.write(b"RIFF\x00\x00not a wav file")
      else:
        write_wav(wav, seconds, seed=seed)
      if clip in video_clips:
        os.makedirs(os.path.join(root, "VideoFlash"), exist_ok=True)
        write_flv(os.path.join(root, "VideoFlash", clip + ".flv"), seed=seed)
      else:
        folder = os.path.join(root, "Image-01-FPS", clip)
        os.makedirs(folder, exist_ok=True)
        for j in range(0 if clip in no_frames else frames):
          path = os.path.join(folder, f"{j * 30:05d}.jpg")
          if j == 0 and clip in corrupt_jpg:
            with open(path, "wb") as f:
              f.write(b"\xff\xd8\xff\xe0 truncated")
          else:
            write_jpg(path, *frame_size, seed=seed + j)
      written[split].append(clip)
  return written


def write_avmnist(root: str, *, num_train: int = 30, num_test: int = 20, seed: int = 0,
                  nan_rows=()) -> None:
  """MultiBench-style npy files (image rows flat, 784); ``nan_rows``: train rows with a NaN."""
  rng = np.random.default_rng(seed)
  for sub in ("image", "audio"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  for split, n in (("train", num_train), ("test", num_test)):
    image = rng.integers(0, 256, (n, 784)).astype(np.float32)
    audio = rng.integers(0, 256, (n, 112, 112)).astype(np.float32)
    if split == "train":
      for r in nan_rows:
        audio[r, 0, 0] = np.nan
    np.save(os.path.join(root, "image", f"{split}_data.npy"), image)
    np.save(os.path.join(root, "audio", f"{split}_data.npy"), audio)
    np.save(os.path.join(root, f"{split}_labels.npy"), rng.integers(0, 10, n))


def write_kinetics_sounds(root: str, *, num_train: int = 20, num_test: int = 6,
                          spec_shape=(64, 16), frames: int = 4, frame_size=(48, 64),
                          missing=0, seed: int = 0) -> dict[str, list[str]]:
  """List files (OGM-GE "clip,10,label" style), spectrogram npys and 1-fps frames;
  ``missing`` extra train list entries have no files."""
  rng = np.random.default_rng(seed)
  written = {}
  for split, n in (("train", num_train), ("test", num_test)):
    os.makedirs(os.path.join(root, f"{split}_spec"), exist_ok=True)
    lines, written[split] = [], []
    for i in range(n + (missing if split == "train" else 0)):
      clip = f"{split}_clip_{i:03d}"
      lines.append(f"{clip},10,{int(rng.integers(0, 31))}")
      if i >= n:
        continue
      np.save(os.path.join(root, f"{split}_spec", clip + ".npy"),
              rng.standard_normal(spec_shape).astype(np.float32))
      folder = os.path.join(root, f"{split}-frames-1fps", clip)
      os.makedirs(folder, exist_ok=True)
      for j in range(frames):
        write_jpg(os.path.join(folder, f"frame_{j + 1:05d}.jpg"), *frame_size, seed=i * 10 + j)
      written[split].append(clip)
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return written


def affect_split(rng, n: int, dims: dict[str, int], length: int, labels: np.ndarray,
                 empty_text_rows=()) -> dict:
  """One MultiBench affect split: front-padded sequences, audio with some -inf values."""
  out = {}
  starts = rng.integers(0, length - 1, n)
  for key, d in dims.items():
    x = rng.standard_normal((n, length, d)).astype(np.float32)
    for i, s in enumerate(starts):
      x[i, :s] = 0
    out[key] = x
  out["audio"][:, -1, 0] = -np.inf
  for r in empty_text_rows:
    out["text"][r] = 0
  out["labels"] = labels
  out["id"] = np.array([[f"vid{i}", str(i)] for i in range(n)])
  return out


def write_affect(path: str, *, dims: dict[str, int], sizes=(12, 5, 6), length: int = 8,
                 sentiment: bool = False, empty_text_rows=(), seed: int = 0) -> dict:
  """A MultiBench affect pickle at ``path`` (``dims`` keyed vision / audio / text);
  ``sentiment``: MOSEI-style (N, 1, 1) scores in [-3, 3], else UR-Funny (N, 1) 0/1 labels.
  ``empty_text_rows``: train rows whose text is all zeros. Returns the data written."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, n in zip(("train", "valid", "test"), sizes):
    if sentiment:
      labels = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
      labels[0, 0, 0] = 0.0
    else:
      labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
    data[split] = affect_split(rng, n, dims, length, labels,
                               empty_text_rows if split == "train" else ())
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return data


def write_ave(root: str, *, num_videos: int = 16, orders=None, seed: int = 0,
              no_event=(), nan_rows=(), annotations: bool = False,
              wrong_annotations=()) -> dict[str, list[int]]:
  """PSP-style h5 files for ``num_videos`` videos (each one event over a run of segments).
  ``orders``: split -> video indices (default 10 / 3 / 3). ``no_event``: all-background
  videos; ``nan_rows``: videos with a NaN feature. ``annotations``: also AVE's own
  Annotations.txt (row i = video i) and trainSet/valSet/testSet.txt; ``wrong_annotations``:
  videos whose annotated event starts a second later than right_labels.h5 says. Returns the
  orders, each video's event class and segment labels (``segments``, (n, 10), 28 =
  background)."""
  import h5py  # noqa: PLC0415
  rng = np.random.default_rng(seed)
  n = num_videos
  audio = rng.standard_normal((n, 10, 128)).astype(np.float32)
  visual = rng.standard_normal((n, 10, 7, 7, 512)).astype(np.float32)
  labels = np.zeros((n, 10, 29), np.float32)
  events = rng.integers(0, 28, n)
  for i in range(n):
    start = int(rng.integers(0, 5))
    labels[i, :, 28] = 1
    if i not in no_event:
      labels[i, start:start + 5, 28] = 0
      labels[i, start:start + 5, events[i]] = 1
  for r in nan_rows:
    visual[r, 0, 0, 0, 0] = np.nan
  spans = [(0, 0) if i in no_event else (int(np.argmax(labels[i, :, 28] == 0)),
                                         int(np.argmax(labels[i, :, 28] == 0)) + 5)
           for i in range(n)]
  for name, data in (("audio_feature.h5", audio), ("visual_feature.h5", visual),
                     ("right_labels.h5", labels)):
    with h5py.File(os.path.join(root, name), "w") as f:
      f["avadataset"] = data
  orders = orders or {"train": list(range(0, n - 6)), "val": list(range(n - 6, n - 3)),
                      "test": list(range(n - 3, n))}
  for split, order in orders.items():
    with h5py.File(os.path.join(root, f"{split}_order.h5"), "w") as f:
      f["order"] = np.asarray(order, np.int64)
  if annotations:
    rows = [f"{ave.ANNOTATION_CATEGORIES[events[i]]}&vid{i:04d}&good&{s + (i in wrong_annotations)}"
            f"&{e}" for i, (s, e) in enumerate(spans)]
    with open(os.path.join(root, "Annotations.txt"), "w") as f:
      f.write("Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(rows) + "\n")
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
      with open(os.path.join(root, name), "w") as f:
        f.write("".join(rows[i] + "\n" for i in orders[split]))
  return {"orders": orders, "events": events.tolist(),
          "segments": np.argmax(labels, axis=-1).astype(np.int32)}


# TBJE's CMU-MOSEI pickles: words (with punctuation to clean), mel frames of several lengths
# (one longer than 60) and scores (one exactly 0, some nested arrays as the real files hold).
TBJE_EXAMPLES = {
    "train": {
        "vidA[0]": (["Hello,", "World!", "it's", "well-known"], 5, np.array([[1.5]])),
        "vidA[1]": (["HELLO", "(again)", "...", "and/or"], 70, 0.0),
        "vidB[0]": ([f"w{i}" for i in range(65)], 60, np.array([-2.5])),
    },
    "valid": {"v1": (["world", "again"], 3, -0.5)},
    "test": {"t1": (["Hello", "zebra?"], 61, 2.0), "t2": (["#", "it's"], 1, -1.0)},
}


def write_mosei_tbje(root: str, *, examples=None, extra_sentences=("orphan[0]",),
                     seed: int = 0) -> dict:
  """TBJE-style ``{train,valid,test}_{sentences,mels,sentiment}.p`` pickles from ``examples``
  (split -> key -> (words, frames, score); default :data:`TBJE_EXAMPLES`). Keys in
  ``extra_sentences`` are added to train_sentences.p only (absent from the other pickles).
  Returns the mel arrays written, split -> key -> (T, 80)."""
  rng = np.random.default_rng(seed)
  examples = TBJE_EXAMPLES if examples is None else examples
  os.makedirs(root, exist_ok=True)
  mels = {}
  for split, items in examples.items():
    mels[split] = {k: rng.standard_normal((t, 80)).astype(np.float32)
                   for k, (_, t, _) in items.items()}
    sentences = {k: list(words) for k, (words, _, _) in items.items()}
    if split == "train":
      sentences.update({k: ["orphan"] for k in extra_sentences})
    for kind, data in (("sentences", sentences), ("mels", mels[split]),
                       ("sentiment", {k: score for k, (_, _, score) in items.items()})):
      with open(os.path.join(root, f"{split}_{kind}.p"), "wb") as f:
        pickle.dump(data, f)
  return mels
