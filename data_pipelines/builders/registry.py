"""The named datasets: what each one is on the load side, and where its TFDS builder lives.

Each dataset folder ``data_pipelines/builders/<name>/`` holds the builder
(``<name>_dataset_builder.py``, class ``Builder``) and, in its ``__init__.py``, a
``DEFINITION``: a :class:`DatasetDef` that the loader (``sources/loader.py``) reads without
importing the builder.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

NAMES = ("cremad", "avmnist", "kinetics_sounds", "urfunny", "cmu_mosei", "ave", "mosei_tbje")

# The optional ``config.data`` fields every named dataset reads, and their defaults: which stored
# split the trainer's val / dep / test read ("" = the dataset's own; ``data_pipelines``'s
# ``with_split_roles``) and how many random examples per split ``synthetic=True`` makes.
COMMON_OPTIONS = dict(split_roles="", synthetic_examples=64)


@dataclasses.dataclass(frozen=True)
class DatasetDef:
  """Load-side description of one dataset.

  Attributes:
    name: the TFDS name (also ``data_config.name``).
    modalities: all modalities, in their canonical (Shapley bit) order.
    split_aliases: contract split -> stored TFDS split (e.g. ``{"val": "dep"}``).
    layout: the raw layout the builder reads (quoted in errors and the builder docstring).
    required: entries of ``manual_dir`` the builder cannot do without (``"a|b"``: either).
    make_preprocess: ``(data_config, modalities) -> preprocess`` (see ``preprocess.py``).
    synthetic_spec: ``data_config -> {key: (shape, dtype)}`` of every modality and companion.
    num_classes: ``data_config -> int``.
    version: the builder's version (the prepared copy lives in ``data_dir/name/version``).
    label_shape: ``data_config -> shape`` of one example's label (``()``; AVE's segment task:
      ``(10,)``, one label per segment).
    synthetic_finish: ``data_config -> None | finish``; ``finish(example, rng)`` makes a
      random example (``sources/random_inputs.py``) consistent (companions derived from the
      label, token ids in range, padding after the lengths).
    vocabulary: ``(data_config, builder_dir | None) -> (vocab_sizes, embeddings)`` of the
      tokenised modalities (``{}``, ``{}`` for feature datasets); ``builder_dir`` is None for
      synthetic inputs.
    options: the dataset's own optional ``data_config`` fields and their defaults (e.g.
      ``num_frames``, ``task``): the values its readers fall back to, and what
      ``configs/default.py``'s ``data_config`` declares (``data_pipelines.config_fields``).
  """

  name: str
  modalities: tuple[str, ...]
  split_aliases: Mapping[str, str]
  layout: str
  required: tuple[str, ...]
  make_preprocess: Callable[[Any, tuple[str, ...]], Callable]
  synthetic_spec: Callable[[Any], dict]
  num_classes: Callable[[Any], int]
  version: str = "1.0.0"
  label_shape: Callable[[Any], tuple[int, ...]] = lambda data_config: ()
  synthetic_finish: Callable[[Any], Callable | None] = lambda data_config: None
  vocabulary: Callable[[Any, str | None], tuple[dict, dict]] = (
      lambda data_config, builder_dir: ({}, {}))
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def builder_module(self) -> str:
    return f"data_pipelines.builders.{self.name}.{self.name}_dataset_builder"

  def builder_class(self):
    """The TFDS ``Builder`` class (imports TFDS)."""
    return importlib.import_module(self.builder_module).Builder

  def tfds_split(self, split: str) -> str:
    return self.split_aliases.get(split, split)


def get(name: str) -> DatasetDef:
  """The definition of dataset ``name``; ValueError naming the valid ones otherwise."""
  if name not in NAMES:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(('synthetic', 'npz') + NAMES)}")
  return importlib.import_module(f"data_pipelines.builders.{name}").DEFINITION


def frames_spec(num_frames: int, size: int = 224) -> tuple[tuple[int, ...], np.dtype]:
  """Video frames as the loader yields them: uint8, normalised on the device."""
  return (int(num_frames), size, size, 3), np.dtype(np.uint8)
