"""CMU-MOSEI as TBJE and the released AGM code read it (tokenised text + mel frames).

The AGM paper's Table 4 runs TBJE (jbdel/MOSEI_UMONS) on CMU-MOSEI's text and audio
(supplement A.1); the released ``dataloader/MOSEI_loader.py`` reads TBJE's pickles. Inputs:
``text`` int32 (60,) token ids (0 = padding, 1 = unknown word; ``builders/text.py``) with
``text_lengths`` int32; ``audio`` float32 (60, 80) mel frames (cut to 60 or zero-padded at the
end) with ``audio_lengths`` int32 = min(T, 60). Splits: train / val (TBJE's "valid") / test;
``dep`` is ``val``. The builder is ``mosei_tbje_dataset_builder.Builder``; it writes the
vocabulary (``vocab.txt``) next to the prepared copy.

``data_config`` fields:

* ``task`` — "binary" (default; score < 0 -> 0, else 1, so a score of exactly 0 is positive:
  released ``cmumosei_2``), "7class" (released ``cmumosei_7`` bins: < -2, [-2, -1),
  [-1, 0), 0, (0, 1], (1, 2], > 2) or "regression" (``label`` = the float32 score itself and
  ``num_classes`` 1: one output unit, L1 loss, the MOSEI literature's Acc-2/Acc-7/F1/MAE/corr;
  not the AGM paper's setting);
* ``glove_path`` — a GloVe text file; when set, the dataset's ``embeddings["text"]`` is the
  ``(V, dim)`` float32 matrix of the vocabulary (``text.glove_matrix``), else ``{}``;
* ``vocab_size`` — random inputs only (``synthetic=True``; default 1000): their vocabulary.

The loaded dataset also carries ``vocab_sizes = {"text": V}``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines.builders import preprocess, text
from data_pipelines.builders.registry import DatasetDef
from data_pipelines.sources.base import cfg

MODALITIES = ("text", "audio")
MAX_LEN = 60         # released MOSEI_Config: lang_seq_len = audio_seq_len = 60
MELS = 80
TASKS = {"binary": 2, "7class": 7, "regression": 1}   # task -> num_classes (1: scores)
SYNTHETIC_VOCAB = 1000
OPTIONS = dict(task="binary", glove_path="", vocab_size=SYNTHETIC_VOCAB)

LAYOUT = """\
  RAW/                   TBJE's CMU-MOSEI pickles (github.com/jbdel/MOSEI_UMONS, its data
                         download; the AGM MOSEI loader reads the same files)
    train_sentences.p    {key: [word, …]}           (also valid_*, test_*)
    train_mels.p         {key: (T, 80) mel frames}
    train_sentiment.p    {key: sentiment score in [-3, 3] (a float or a one-element array)}
    train_emotion.p      optional (emotion labels; not read)
    key_lists.json       optional: the released split key lists, from your copy of the AGM
                         code (python -m data_pipelines.builders.mosei_tbje.keys)"""


def task(data_config) -> str:
  name = cfg(data_config, "task", OPTIONS["task"])
  if name not in TASKS:
    raise ValueError(f"unknown mosei_tbje task {name!r}; valid: {', '.join(TASKS)}")
  return name


def binary_label(score: float) -> int:
  """Released ``cmumosei_2``: 0 for a negative score, 1 otherwise (0 itself is positive)."""
  return 0 if score < 0 else 1


def pad_frames(frames: np.ndarray, max_len: int = MAX_LEN) -> tuple[np.ndarray, int]:
  """``(frames cut to max_len or zero-padded at the end, min(T, max_len))`` (released
  ``pad_feature``)."""
  frames = np.asarray(frames, np.float32)
  length = min(len(frames), int(max_len))
  out = np.zeros((int(max_len), *frames.shape[1:]), np.float32)
  out[:length] = frames[:length]
  return out, length


@dataclasses.dataclass(frozen=True)
class TokensPreprocess:
  """A stored record to a batch's arrays: token ids (int32) and mel frames (float32) with
  their lengths, and ``label`` for ``task`` (the stored ``sentiment`` itself is not emitted)."""

  modalities: tuple[str, ...]
  task: str = "binary"

  def __call__(self, record, *, train: bool, rng=None) -> dict:
    del train, rng
    out = {}
    for m in self.modalities:
      dtype = np.int32 if m == "text" else np.float32
      out[m] = np.asarray(record[m], dtype)
      out[f"{m}_lengths"] = np.int32(record[f"{m}_lengths"])
    score = float(record["sentiment"])
    if self.task == "regression":
      out["label"] = np.float32(score)
      return out
    out["label"] = np.int32(binary_label(score) if self.task == "binary"
                            else preprocess.sentiment_class7(score))
    return out


def make_preprocess(data_config, modalities):
  unknown = set(modalities) - set(MODALITIES)
  if unknown:
    raise ValueError(f"unknown mosei_tbje modality {sorted(unknown)}; valid: text, audio")
  return TokensPreprocess(modalities=tuple(modalities), task=task(data_config))


def synthetic_spec(data_config) -> dict:
  del data_config
  i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
  return {"text": ((MAX_LEN,), i32), "text_lengths": ((), i32),
          "audio": ((MAX_LEN, MELS), f32), "audio_lengths": ((), i32)}


def synthetic_vocab_size(data_config) -> int:
  size = int(cfg(data_config, "vocab_size", OPTIONS["vocab_size"]))
  if size <= text.RESERVED:
    raise ValueError(f"mosei_tbje vocab_size must be > {text.RESERVED}, got {size}")
  return size


@dataclasses.dataclass(frozen=True)
class FinishSynthetic:
  """Random token ids in ``[2, vocab_size)`` up to ``text_lengths`` and PAD after; mel frames
  zero after ``audio_lengths`` (the padding a prepared copy has). With ``regression`` the label
  is a float32 score uniform in [-3, 3] rounded to a multiple of 1/3 (MOSEI's scores average
  three annotators' integers), so exact zeros (neutral) occur."""

  vocab_size: int
  regression: bool = False

  def __call__(self, example: dict, rng) -> dict:
    out = dict(example)
    if "text" in out:
      ids = rng.integers(text.RESERVED, self.vocab_size, size=np.shape(out["text"]))
      ids[int(out["text_lengths"]):] = text.PAD_ID
      out["text"] = ids.astype(np.int32)
    if "audio" in out:
      audio = np.array(out["audio"], np.float32)
      audio[int(out["audio_lengths"]):] = 0
      out["audio"] = audio
    if self.regression:
      out["label"] = np.float32(np.round(rng.uniform(-3.0, 3.0) * 3.0) / 3.0)
    return out


def vocabulary(data_config, builder_dir: str | None) -> tuple[dict, dict]:
  """``({"text": V}, {"text": (V, dim)} or {})``: the prepared copy's ``vocab.txt`` (or the
  synthetic ``vocab_size``) and, with ``glove_path``, its GloVe matrix."""
  if builder_dir is None:
    return {"text": synthetic_vocab_size(data_config)}, {}
  vocab = text.read_vocab(os.path.join(builder_dir, text.VOCAB_FILE))
  glove_path = cfg(data_config, "glove_path", OPTIONS["glove_path"])
  embeddings = {"text": text.glove_matrix(glove_path, vocab)} if glove_path else {}
  return {"text": len(vocab)}, embeddings


DEFINITION = DatasetDef(
    name="mosei_tbje", modalities=MODALITIES, split_aliases={"dep": "val"}, layout=LAYOUT,
    required=tuple(f"{s}_{k}.p" for s in ("train", "valid", "test")
                   for k in ("sentences", "mels", "sentiment")),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: TASKS[task(data_config)],
    synthetic_finish=lambda data_config: FinishSynthetic(
        synthetic_vocab_size(data_config), regression=task(data_config) == "regression"),
    vocabulary=vocabulary, options=OPTIONS)
