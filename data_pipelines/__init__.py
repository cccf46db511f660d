"""Data pipelines: TFDS builders for the papers' datasets, npz folders, the synthetic default.

``load(data_config, seed=...)`` is the only entry point the trainer uses. It dispatches on
``data_config.name``:

* ``"synthetic"``: the embedded two-modality task (``synthetic.py``; ``data_seed``,
  ``synthetic_options``);
* ``"npz"``: a folder of ``train/dep/test[/val].npz`` (``npz.py``; ``dir``, ``modalities``,
  ``num_classes``);
* a named dataset (``registry.NAMES``: cremad, avmnist, kinetics_sounds, urfunny, cmu_mosei,
  ave): with ``synthetic=True``, random inputs of its shapes (``synthetic_examples``,
  ``data_seed``); otherwise the prepared array_record copy in ``data_dir`` (prepared from
  ``manual_dir`` on first use) read through the Grain loader (``loader.py``; ``num_workers``,
  ``modalities`` and the dataset's own fields).
"""

from __future__ import annotations

from data_pipelines.base import SPLITS, ArrayDataset
from data_pipelines.registry import NAMES, cfg


def load(data_config, *, seed: int = 0):
  """Returns a dataset object (see ``data_pipelines.base``) for ``config.data``."""
  del seed  # the data's content is seeded by data_config.data_seed; order by the trainer
  name = data_config.name
  if name == "synthetic":
    from data_pipelines.synthetic import make_synthetic  # noqa: PLC0415
    options = dict(data_config.get("synthetic_options", {}) or {})
    return make_synthetic(seed=data_config.get("data_seed", 0), **options)
  if name == "npz":
    from data_pipelines.npz import load_npz  # noqa: PLC0415
    return load_npz(data_config)
  from data_pipelines import registry  # noqa: PLC0415
  from data_pipelines.loader import select_modalities  # noqa: PLC0415
  definition = registry.get(name)
  modalities = select_modalities(data_config, definition.modalities, where=name)
  if cfg(data_config, "synthetic", False):
    from data_pipelines.random_inputs import RandomDataset  # noqa: PLC0415
    spec = definition.synthetic_spec(data_config)
    spec = {k: v for k, v in spec.items()
            if k in modalities or (k.endswith("_lengths") and k[:-len("_lengths")] in modalities)}
    return RandomDataset(name=name, modalities=modalities,
                         num_classes=definition.num_classes(data_config), spec=spec,
                         examples_per_split=int(cfg(data_config, "synthetic_examples", 64)),
                         data_seed=int(cfg(data_config, "data_seed", 0)))
  from data_pipelines.loader import TfdsDataset  # noqa: PLC0415
  from data_pipelines.prepare import ensure_prepared  # noqa: PLC0415
  return TfdsDataset(ensure_prepared(definition, data_config), definition, data_config,
                     modalities)


__all__ = ["NAMES", "SPLITS", "ArrayDataset", "load"]
