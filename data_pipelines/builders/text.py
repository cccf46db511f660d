"""Words to token ids, the vocabulary file, and GloVe vectors: TBJE's text side of CMU-MOSEI.

The rules follow the released AGM code's ``dataloader/tokenizer.py`` (which follows TBJE's,
jbdel/MOSEI_UMONS) with its id clash removed:

* :func:`clean` — lower-case, delete the characters ``. , ' ! ? " ( ) * # : ;``, then turn
  ``-`` and ``/`` into spaces (the result stays one token: ``"well-known"`` ->
  ``"well known"``); :func:`tokenize` drops the words that clean to ``""``.
* :func:`build_vocab` — ids ``0`` = :data:`PAD`, ``1`` = :data:`UNK`, then the training words
  from ``2`` in order of first appearance. The released ``create_dict`` starts from
  ``{'UNK': 1}``-style numbering in which the first training word gets id ``len(dict)`` = 1
  as well (UNK and that word share a row), and pads with id 0, whose embedding row is spaCy's
  vector of the string ``'UNK'``; here every id is one word and padding is its own row.
* :func:`token_ids` — the first ``max_len`` (60) tokens, unknown words to ``UNK``, zero-padded.
* :func:`write_vocab` / :func:`read_vocab` — one token per line, line ``i`` holds id ``i``.
* :func:`glove_matrix` — ``(V, dim)`` float32 rows from a GloVe text file (``word v1 … v_dim``);
  PAD, UNK and words absent from the file are zero rows (spaCy's ``en_vectors_web_lg``, which
  the released code reads, is GloVe Common Crawl 300-d and also gives zeros for unknown words).

No TFDS here: the loader reads the vocabulary through this module.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger("data_pipelines")

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
RESERVED = 2            # ids below this are PAD and UNK
VOCAB_FILE = "vocab.txt"
_DROP = re.compile(r"[.,'!?\"()*#:;]")


def clean(word: str) -> str:
  """The released ``clean`` rule on one word (see the module docstring)."""
  return _DROP.sub("", word.lower()).replace("-", " ").replace("/", " ")


def tokenize(words: Iterable[str]) -> list[str]:
  """Cleaned words, those that clean to the empty string dropped."""
  return [t for t in (clean(str(w)) for w in words) if t != ""]


def build_vocab(sentences: Iterable[Sequence[str]]) -> list[str]:
  """``[PAD, UNK, w_2, w_3, …]``: the tokens of ``sentences`` in order of first appearance."""
  vocab, seen = [PAD, UNK], {PAD, UNK}
  for sentence in sentences:
    for token in sentence:
      if token not in seen:
        seen.add(token)
        vocab.append(token)
  return vocab


def token_ids(tokens: Sequence[str], index: Mapping[str, int], max_len: int
              ) -> tuple[np.ndarray, int]:
  """``(ids int32 (max_len,), length)``: the first ``max_len`` tokens' ids (UNK if unknown),
  PAD after them; ``length = min(len(tokens), max_len)``."""
  length = min(len(tokens), int(max_len))
  ids = np.full((int(max_len),), PAD_ID, np.int32)
  ids[:length] = [index.get(t, UNK_ID) for t in tokens[:length]]
  return ids, length


def write_vocab(path: str, vocab: Sequence[str]) -> None:
  """One token per line (line ``i`` = id ``i``); ValueError for a token holding a newline."""
  bad = [t for t in vocab if "\n" in t or "\r" in t]
  if bad:
    raise ValueError(f"vocabulary tokens may not hold line breaks: {bad[:3]}")
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write("".join(f"{t}\n" for t in vocab))


def read_vocab(path: str) -> list[str]:
  """The tokens :func:`write_vocab` wrote (ValueError if the file is not such a vocabulary)."""
  if not os.path.exists(path):
    raise ValueError(f"{path}: no vocabulary file (prepare the dataset again)")
  with open(path, encoding="utf-8", newline="\n") as f:
    text = f.read()
  vocab = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
  if vocab[:RESERVED] != [PAD, UNK]:
    raise ValueError(f"{path}: a vocabulary starts with {PAD!r}, {UNK!r}; got {vocab[:2]}")
  return vocab


def _glove_rows(path: str, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
  """``({word: vector}, dim)`` for the ``wanted`` words of a GloVe text file. A row with more
  fields than the first row's is a word holding spaces (glove.840B has a few) when its extra
  leading fields are not numbers; any other disagreement is a ValueError naming the line."""
  rows: dict[str, np.ndarray] = {}
  dim = None
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      parts = line.rstrip("\r\n").rstrip(" ").split(" ")
      if len(parts) < 2:
        continue   # blank line
      if dim is None:
        dim = len(parts) - 1
      if len(parts) - 1 < dim or (len(parts) - 1 > dim and _is_number(parts[-dim - 1])):
        raise ValueError(f"{path}:{line_no}: {len(parts) - 1} values; the first row has {dim}")
      word = " ".join(parts[:-dim])
      if word in wanted and word not in rows:
        try:
          rows[word] = np.asarray(parts[-dim:], np.float32)
        except ValueError as e:
          raise ValueError(f"{path}:{line_no}: not a GloVe row ({e})") from e
  if dim is None:
    raise ValueError(f"{path}: no GloVe rows")
  return rows, dim


def _is_number(field: str) -> bool:
  try:
    float(field)
  except ValueError:
    return False
  return True


def glove_matrix(path: str, vocab: Sequence[str]) -> np.ndarray:
  """``(len(vocab), dim)`` float32: row ``i`` the GloVe vector of ``vocab[i]``; PAD, UNK and
  words absent from the file are zero rows; ``dim`` is the file's (first row's). A token that
  :func:`clean` gave spaces (``"well known"``) gets the mean of its words' vectors, absent
  words counting as zeros (what spaCy's ``Doc.vector`` returns for such a string in the
  released ``create_dict``). Logs how many tokens were found."""
  parts = {i: vocab[i].split() for i in range(RESERVED, len(vocab))}
  rows, dim = _glove_rows(path, {w for words in parts.values() for w in words})
  matrix = np.zeros((len(vocab), dim), np.float32)
  found = 0
  for i, words in parts.items():
    vectors = [rows[w] for w in words if w in rows]
    if vectors:
      found += 1
      matrix[i] = np.sum(vectors, axis=0) / len(words)
  logger.info("%s: found %d of %d vocabulary tokens (%d-d)", path, found, len(parts), dim)
  return matrix
