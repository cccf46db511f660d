"""TFDS builder for CMU-MOSEI from TBJE's pickles (tokenised sentences and mel frames).

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

Splits train / val / test are TBJE's train / valid / test. The examples of a split are the
keys present in all three of its sentences, mels and sentiment pickles, in sorted order (the
others are counted as missing and listed in ``metadata.json``); the builder prints how many it
found per split. The released loader instead keeps hard-coded key lists (its
``dataloader/tokenizer.py``: 16,327 train / 1,871 valid / 4,662 test keys, the counts of
supplement A.1) filtered by the same presence test. With ``key_lists.json`` in the raw folder
(``keys.py`` writes it from the user's copy of that file) each split is restricted to its list,
as the released loader does; the builder prints how many listed keys it
found and lists the others in ``metadata.json``.

Each example: ``text`` int32 (60,) token ids and ``text_lengths`` (``builders/text.py``: the
released ``clean`` rule, the vocabulary of the training split's examples in order of first
appearance, ids 0 = PAD and 1 = UNK, at most 60 tokens); ``audio`` float32 (60, 80) mel frames
cut to 60 or zero-padded at the end, ``audio_lengths`` = min(T, 60); ``label`` (binary:
score < 0 -> 0, else 1); ``sentiment`` float32 (the raw score, for the 7-class task and later
regression work); ``id`` (the key). The vocabulary is written as ``vocab.txt`` (line i = id i)
in the prepared copy's directory. The released ``create_dict`` instead walks every key of
``train_sentences.p`` in the pickle's order, including keys it then drops. Examples whose mel
frames are empty, not (T, 80) or not finite, or whose score is not one finite number, are
skipped with a warning and counted.
"""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import text
from data_pipelines.builders.mosei_tbje import DEFINITION, MAX_LEN, MELS, binary_label, pad_frames
from data_pipelines.builders.mosei_tbje.keys import KEY_LISTS_FILE, read_key_lists

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth
from data_pipelines.builders.builder_base import RawBuilder
from data_pipelines.builders.common import CorruptInput

SPLITS = {"train": "train", "val": "valid", "test": "test"}
KINDS = ("sentences", "mels", "sentiment")
RELEASED_COUNTS = {"train": 16327, "val": 1871, "test": 4662}   # supplement A.1


def load_pickle(path: str) -> dict:
  """A pickled dict (ValueError naming the file otherwise)."""
  try:
    with open(path, "rb") as f:
      data = pickle.load(f)
  except Exception as e:  # UnpicklingError, EOFError, ModuleNotFoundError…
    raise ValueError(f"{path}: not a readable pickle ({e})") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path}: holds a {type(data).__name__}, expected a dict keyed by clip")
  return data


def sentiment_score(value) -> float:
  """The one finite float of a score (a number or a nested one-element array)."""
  score = np.asarray(value, np.float64).reshape(-1)
  if score.size != 1 or not np.isfinite(score[0]):
    raise CorruptInput(f"sentiment {value!r} is not one finite number")
  return float(score[0])


def mel_frames(value) -> np.ndarray:
  frames = np.asarray(value, np.float32)
  if frames.ndim != 2 or frames.shape[1] != MELS or not len(frames):
    raise CorruptInput(f"mel frames of shape {frames.shape}; expected (T >= 1, {MELS})")
  if not np.all(np.isfinite(frames)):
    raise CorruptInput("non-finite mel frames")
  return frames


class Builder(RawBuilder):
  """CMU-MOSEI (TBJE's pickles): token ids and mel frames; sentiment labels."""

  DEFINITION = DEFINITION
  DESCRIPTION = "CMU-MOSEI sentiment as TBJE reads it: tokenised sentences and 80-bin mels."
  HOMEPAGE = "https://github.com/jbdel/MOSEI_UMONS"
  CITATION = """@inproceedings{delbrouck2020transformer, title={A Transformer-based joint-encoding
for Emotion Recognition and Sentiment Analysis}, author={Delbrouck, Jean-Benoit and others},
booktitle={Second Grand-Challenge and Workshop on Multimodal Language (Challenge-HML)},
year={2020}}"""

  def _features(self):
    return tfds.features.FeaturesDict({
        "text": tfds.features.Tensor(shape=(MAX_LEN,), dtype=np.int32),
        "text_lengths": tfds.features.Scalar(dtype=np.int32),
        "audio": tfds.features.Tensor(shape=(MAX_LEN, MELS), dtype=np.float32),
        "audio_lengths": tfds.features.Scalar(dtype=np.int32),
        "label": tfds.features.ClassLabel(names=["negative", "positive"]),
        "sentiment": tfds.features.Scalar(dtype=np.float32),
        "id": tfds.features.Text(),
    })

  def _split_generators(self, dl_manager):
    root = self._root(dl_manager)
    listed = read_key_lists(os.path.join(root, KEY_LISTS_FILE))
    data, keys, missing = {}, {}, []
    for split, stem in SPLITS.items():
      files = {k: load_pickle(os.path.join(root, f"{stem}_{k}.p")) for k in KINDS}
      common = set.intersection(*(set(f) for f in files.values()))
      if listed is None:
        keys[split] = sorted(common, key=str)
        missing += [f"{stem}/{k}" for k in sorted(set().union(*files.values()) - common,
                                                  key=str)]
        print(f"mosei_tbje/{split}: {len(common)} keys in all three pickles (the released "
              f"lists: {RELEASED_COUNTS[split]})", flush=True)
      else:   # the released lists; a listed key absent from a pickle is dropped and counted
        keys[split] = [k for k in listed[split] if k in common]
        missing += [f"{stem}/{k} (listed)" for k in listed[split] if k not in common]
        print(f"mosei_tbje/{split}: {len(keys[split])} of the {len(listed[split])} listed keys "
              f"in all three pickles", flush=True)
      data[split] = files
    if missing:
      self._missing(missing)
    sentences = {s: {k: text.tokenize(data[s]["sentences"][k]) for k in keys[s]} for s in SPLITS}
    vocab = text.build_vocab(sentences["train"][k] for k in keys["train"])
    os.makedirs(self.data_dir, exist_ok=True)
    text.write_vocab(os.path.join(self.data_dir, text.VOCAB_FILE), vocab)
    self.info.metadata["vocab_size"] = len(vocab)
    index = {t: i for i, t in enumerate(vocab)}
    items = {s: [(k, sentences[s][k], data[s]["mels"][k], data[s]["sentiment"][k])
                 for k in keys[s]] for s in SPLITS}
    return self._generators(items, functools.partial(self._generate_examples, index))

  def _generate_examples(self, index, split, items):
    def make(item):
      key, tokens, mels, score = item
      score = sentiment_score(score)
      audio, audio_length = pad_frames(mel_frames(mels))
      ids, text_length = text.token_ids(tokens, index, MAX_LEN)
      return {"text": ids, "text_lengths": text_length, "audio": audio,
              "audio_lengths": audio_length, "label": binary_label(score),
              "sentiment": score, "id": str(key)}
    return self._emit(split, ((str(item[0]), item) for item in items), make)
