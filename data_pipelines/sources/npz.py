"""Users' own data: a folder of npz files, loaded into memory and validated.

Layout (``data_config.dir``)::

  DIR/train.npz   one array per modality, shape (N, ...), and "label" (N,) integers 0..K-1
  DIR/dep.npz     the split that fits the competition-strength probe
  DIR/test.npz
  DIR/val.npz     optional; without it "val" is "dep"

Any number of modalities; ``data_config.modalities`` (comma-separated, or a list, as
``agm_jax.modalities.parse`` reads it) selects and orders them (default: every array but
"label" and the ``"<m>_lengths"`` companions, in the order of train.npz). A ``"<m>_lengths"``
(N,) integer array in 0..L (L = the modality's second axis) is carried along with its
modality. ``data_config.num_classes`` fixes K (default: the classes seen in train.npz, i.e.
its largest label + 1): a label of any split outside 0..K-1 is an error naming the file and
the example, found before anything is compiled; a class of train.npz that val, dep or test
never holds is a warning. Float arrays become float32 and integer arrays int32.

Every problem is one ``ValueError`` naming the file and the field: a missing file or field,
NaN or inf, a label outside 0..K-1 or not an integer, fields of different lengths, a
modality whose per-example shape differs between files.
"""

from __future__ import annotations

import logging
import os
import zipfile

import numpy as np

from agm_jax import modalities
from data_pipelines.builders.registry import COMMON_OPTIONS
from data_pipelines.sources.base import ArrayDataset, cfg
from data_pipelines.sources.random_inputs import RandomDataset

REQUIRED_SPLITS = ("train", "dep", "test")
OPTIONAL_SPLITS = ("val",)
LENGTHS = "_lengths"


def read_npz(path: str) -> dict[str, np.ndarray]:
  """All arrays of ``path`` (no pickles); ValueError naming the file if unreadable."""
  if not os.path.exists(path):
    raise ValueError(f"{path}: file not found (an npz folder needs "
                     f"{', '.join(s + '.npz' for s in REQUIRED_SPLITS)}; val.npz is optional)")
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f"{path}: not a readable npz of plain arrays ({e})") from e


def default_modalities(arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
  return tuple(k for k in arrays if k != "label" and not k.endswith(LENGTHS))


def _cast(path: str, field: str, x: np.ndarray) -> np.ndarray:
  if np.issubdtype(x.dtype, np.floating):
    if not np.all(np.isfinite(x)):
      bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
      raise ValueError(f"{path}: field {field!r} holds NaN or inf (first in example {bad})")
    return x.astype(np.float32)
  if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
    return x.astype(np.int32)
  raise ValueError(f"{path}: field {field!r} has dtype {x.dtype}; expected numbers")


def check_labels(path: str, label: np.ndarray, num_classes: int | None,
                 declared: str = "") -> np.ndarray:
  """int32 labels; ValueError naming the file and example if not 1-D integers in
  ``0..num_classes-1`` (``declared``: where that range comes from, for the message)."""
  if label.ndim != 1:
    raise ValueError(f"{path}: field 'label' has shape {label.shape}; expected (N,)")
  if np.issubdtype(label.dtype, np.floating):
    if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
      raise ValueError(f"{path}: field 'label' holds non-integer values")
  elif not np.issubdtype(label.dtype, np.integer):
    raise ValueError(f"{path}: field 'label' has dtype {label.dtype}; expected integers")
  label = label.astype(np.int64)
  upper = num_classes if num_classes is not None else np.iinfo(np.int32).max
  bad = np.flatnonzero((label < 0) | (label >= upper))
  if len(bad):
    k = f"0..{num_classes - 1}" if num_classes is not None else "0 or more"
    raise ValueError(f"{path}: field 'label' value {label[bad[0]]} (example {bad[0]}) is "
                     f"outside {k}{declared}")
  return label.astype(np.int32)


def missing_classes(labels: np.ndarray, num_classes: int) -> list[int]:
  """The classes in ``0..num_classes-1`` that ``labels`` never holds."""
  return sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))


def check_split(path: str, arrays: dict[str, np.ndarray], names: tuple[str, ...],
                num_classes: int | None, declared: str = "") -> dict[str, np.ndarray]:
  """The selected fields of one file, validated and cast (see the module docstring)."""
  if "label" not in arrays:
    raise ValueError(f"{path}: no field 'label' (it has {sorted(arrays)})")
  label = check_labels(path, arrays["label"], num_classes, declared)
  n = len(label)
  out = {}
  for m in names:
    if m not in arrays:
      raise ValueError(f"{path}: no field {m!r}, which data.modalities requests (it has "
                       f"{sorted(arrays)})")
    keys = [m] + ([m + LENGTHS] if m + LENGTHS in arrays else [])
    for key in keys:
      x = arrays[key]
      if x.ndim == 0 or len(x) != n:
        rows = "a scalar" if x.ndim == 0 else f"{len(x)} rows"
        raise ValueError(f"{path}: field {key!r} has {rows} but 'label' has {n}")
      out[key] = _cast(path, key, x)
    if m + LENGTHS in out:
      lengths, x = out[m + LENGTHS], out[m]
      if lengths.ndim != 1 or x.ndim < 2 or np.any(lengths < 0) or np.any(lengths > x.shape[1]):
        raise ValueError(f"{path}: field {m + LENGTHS!r} must be (N,) integers in "
                         f"0..{x.shape[1] if x.ndim >= 2 else '?'} (the length of {m!r})")
  out["label"] = label
  return out


def read_folder(directory: str, wanted=None, num_classes: int | None = None
                ) -> tuple[dict[str, dict[str, np.ndarray]], tuple[str, ...], int]:
  """``(arrays[split], modalities, num_classes)`` of an npz folder, validated; ``wanted`` is a
  modality list as ``agm_jax.modalities.parse`` reads it (empty: every modality array)."""
  requested = modalities.parse(wanted)
  if not directory:
    raise ValueError("npz dataset: data.dir is not set (a folder with train.npz, dep.npz, "
                     "test.npz and optionally val.npz)")
  raw = {s: read_npz(os.path.join(directory, f"{s}.npz")) for s in REQUIRED_SPLITS}
  for s in OPTIONAL_SPLITS:
    path = os.path.join(directory, f"{s}.npz")
    if os.path.exists(path):
      raw[s] = read_npz(path)
  train_path = os.path.join(directory, "train.npz")
  names = requested or default_modalities(raw["train"])
  if not names:
    raise ValueError(f"{train_path}: no modality arrays besides 'label'")
  # The classes: data.num_classes, else those seen in train; every split is checked against
  # them (a label train never saw would train a class with no examples and score 0 on it).
  train = check_split(train_path, raw["train"], names, num_classes,
                      " (data.num_classes)" if num_classes is not None else "")
  if not len(train["label"]):
    raise ValueError(f"{train_path}: field 'label' is empty (no training examples)")
  declared = " (data.num_classes)"
  if num_classes is None:
    num_classes = int(train["label"].max()) + 1
    declared = " (the classes seen in train.npz; set data.num_classes to declare more)"
  arrays = {s: train if s == "train" else
            check_split(os.path.join(directory, f"{s}.npz"), a, names, num_classes, declared)
            for s, a in raw.items()}
  seen = set(np.unique(train["label"]).tolist())
  for s, a in arrays.items():
    absent = [c for c in missing_classes(a["label"], num_classes) if c in seen]
    if s != "train" and absent:
      logging.warning("%s: class(es) %s of train.npz never occur in this split (their "
                      "accuracy there is undefined)", os.path.join(directory, f"{s}.npz"),
                      absent[:20])
  for s, a in arrays.items():
    for key, x in a.items():
      expected = arrays["train"][key]
      if key != "label" and (x.shape[1:] != expected.shape[1:] or x.dtype != expected.dtype):
        raise ValueError(f"{os.path.join(directory, f'{s}.npz')}: field {key!r} has per-example "
                         f"shape {x.shape[1:]} {x.dtype}, but train.npz has "
                         f"{expected.shape[1:]} {expected.dtype}")
  return arrays, names, int(num_classes)


def load_npz(data_config) -> ArrayDataset:
  """The ``ArrayDataset`` of ``data_config.dir`` (see the module docstring); with
  ``data_config.synthetic``, random inputs of its shapes instead."""
  num_classes = cfg(data_config, "num_classes", None)
  arrays, names, k = read_folder(cfg(data_config, "dir", ""), cfg(data_config, "modalities", ""),
                                 int(num_classes) if num_classes else None)
  dataset = ArrayDataset(name="npz", modalities=names, num_classes=k, arrays=arrays)
  if cfg(data_config, "synthetic", False):
    return RandomDataset(name="npz", modalities=names, num_classes=k, spec=dataset.spec,
                         examples_per_split=int(cfg(data_config, "synthetic_examples",
                                                    COMMON_OPTIONS["synthetic_examples"])),
                         data_seed=int(cfg(data_config, "data_seed", 0)))
  return dataset
