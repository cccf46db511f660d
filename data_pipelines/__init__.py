"""Data pipelines: TFDS builders for the papers' datasets, npz folders, the synthetic default.

``load(data_config, seed=...)`` is the only entry point the trainer uses.
"""

from __future__ import annotations

from data_pipelines.base import SPLITS, ArrayDataset


def load(data_config, *, seed: int = 0):
  """Returns a dataset object (see ``data_pipelines.base``) for ``config.data``."""
  name = data_config.name
  if name == "synthetic":
    from data_pipelines.synthetic import make_synthetic
    options = dict(data_config.get("synthetic_options", {}) or {})
    return make_synthetic(seed=data_config.get("data_seed", 0), **options)
  raise ValueError(f"unknown dataset {name!r}; valid: ['synthetic']")


__all__ = ["SPLITS", "ArrayDataset", "load"]
