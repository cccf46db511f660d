"""Shared reading of MultiBench's affective-computing pickles (UR-Funny, CMU-MOSEI).

A pickle holds ``{"train"|"valid"|"test": {"vision": (N, L, Fv), "audio": (N, L, Fa),
"text": (N, L, Ft), "labels": (N, …), "id": (N, …)}}``: word-aligned feature sequences,
zero-padded at the front to ``L`` steps. Per example, as MultiBench's ``Affectdataset``
(aligned) and the AGM UR-Funny loader do:

* non-finite values (the audio features hold ``-inf``) become 0;
* an example whose text is all zeros is dropped (AGM's ``drop_entry``; counted as skipped);
* the sequences start at the first non-zero text step; here they are moved to the front and
  zero-padded at the end to ``L`` steps, with ``"<m>_lengths" = L - start``.

Modalities are named ``audio``, ``visual`` (MultiBench's "vision") and ``text``.
"""

from __future__ import annotations

import pickle

import numpy as np

from data_pipelines.builders.common import CorruptInput

SOURCE_KEYS = {"audio": "audio", "visual": "vision", "text": "text"}
MODALITIES = ("audio", "visual", "text")
PICKLE_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def read_pickle(path: str) -> dict:
  """Loads the pickle; ValueError naming the file if it is unreadable or lacks a split/key."""
  try:
    with open(path, "rb") as f:
      try:
        data = pickle.load(f)
      except UnicodeDecodeError:
        f.seek(0)
        data = pickle.load(f, encoding="latin1")
  except Exception as e:  # UnpicklingError, EOFError, …
    raise ValueError(f"{path}: not a readable pickle ({e})") from e
  for split in PICKLE_SPLITS.values():
    if not isinstance(data, dict) or split not in data:
      raise ValueError(f"{path}: no {split!r} split (expected keys train, valid, test)")
    for key in (*SOURCE_KEYS.values(), "labels"):
      if key not in data[split]:
        raise ValueError(f"{path}: split {split!r} has no field {key!r}")
    n = len(data[split]["labels"])
    for key in SOURCE_KEYS.values():
      if len(data[split][key]) != n:
        raise ValueError(f"{path}: split {split!r} field {key!r} has {len(data[split][key])} "
                         f"rows but 'labels' has {n}")
  return data


def aligned_sequences(rows: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
  """``{modality: (L, F)}`` front-padded -> (back-padded copies, valid length)."""
  rows = {m: np.nan_to_num(np.asarray(x, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
          for m, x in rows.items()}
  text = rows["text"]
  nonzero = np.flatnonzero(np.any(text != 0, axis=1))
  if not len(nonzero):
    raise CorruptInput("all-zero text (dropped, as the AGM loader's drop_entry)")
  start = int(nonzero[0])
  out = {}
  for m, x in rows.items():
    seq = np.zeros_like(x)
    seq[:len(x) - start] = x[start:]
    out[m] = seq
  return out, len(text) - start


def example_id(data_split: dict, i: int) -> str:
  ids = data_split.get("id")
  if ids is None:
    return str(i)
  value = np.asarray(ids[i]).reshape(-1)
  parts = [v.decode() if isinstance(v, bytes) else str(v) for v in value]
  return "/".join(parts)


def affect_spec(dims: dict[str, int], length: int = 50) -> dict:
  """Synthetic spec: ``(length, dim)`` float32 sequences and their int32 lengths."""
  spec = {m: ((length, d), np.dtype(np.float32)) for m, d in dims.items()}
  spec.update({f"{m}_lengths": ((), np.dtype(np.int32)) for m in dims})
  return spec
