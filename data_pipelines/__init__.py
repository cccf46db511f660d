"""Data pipelines: what the trainer reads, the builders that make it, and fabricated raw data.

Three groups, for three audiences:

* ``sources/``: what the trainer reads, all behind the dataset contract of ``sources/base.py``:
  the embedded synthetic task (``synthetic.py``), npz folders (``npz.py``), random inputs of
  a dataset's shapes (``random_inputs.py``) and the Grain loader over a prepared dataset
  (``loader.py``).
* ``builders/``: TFDS builders from the papers' raw downloads, one folder per dataset
  (cremad, avmnist, kinetics_sounds, urfunny, cmu_mosei, ave, mosei_tbje; its ``DEFINITION``
  and its builder), the pieces they share, the registry of names and ``prepare.py`` (the
  command that prepares a download once).
* ``fabricated/``: tiny raw layouts of every dataset written from random numbers
  (``layouts.py``), for the tests, and the loader benchmark that runs on them.

``load(data_config, seed=...)`` is the only entry point the trainer uses. It dispatches on
``data_config.name``:

* ``"synthetic"``: the embedded two-modality task (``data_seed``, ``synthetic_options``);
* ``"npz"``: a folder of ``train/dep/test[/val].npz`` (``dir``, ``modalities``,
  ``num_classes``);
* a named dataset (``builders.registry.NAMES``): with ``synthetic=True``, random inputs of its
  shapes (``synthetic_examples``, ``data_seed``); otherwise the prepared array_record copy in
  ``data_dir`` (prepared from ``manual_dir`` on first use) read through the Grain loader
  (``num_workers``, ``modalities``, ``split_roles`` — e.g. ``"dep=test,test=val"``: which
  stored split each of the trainer's val / dep / test reads — and the dataset's own fields).

Every named dataset also carries ``vocab_sizes`` and ``embeddings`` (``{}`` unless it holds
token ids, as ``mosei_tbje`` does: ``{"text": V}`` and, with ``glove_path``, the GloVe rows).
"""

from __future__ import annotations

import dataclasses

from agm_jax import modalities
from data_pipelines.builders import registry
from data_pipelines.builders.prepare import ensure_prepared
from data_pipelines.builders.registry import COMMON_OPTIONS, NAMES
from data_pipelines.sources.base import SPLITS, ArrayDataset, cfg
from data_pipelines.sources.loader import LOADER_DEFAULTS, TfdsDataset
from data_pipelines.sources.npz import load_npz
from data_pipelines.sources.random_inputs import RandomDataset
from data_pipelines.sources.synthetic import make_synthetic

ROLES = ("val", "dep", "test")


def with_split_roles(definition, roles: str):
  """``definition`` with the trainer's splits read from other stored splits: ``roles`` is
  ``"dep=test,test=val"`` (the released UR-Funny code fits the competition probe on its test
  split and reports on valid) or "" (the dataset's own). ValueError names what is wrong."""
  if not roles:
    return definition
  aliases = dict(definition.split_aliases)
  for item in str(roles).split(","):
    role, _, stored = item.strip().partition("=")
    if role not in ROLES or stored not in ("train", *ROLES):
      raise ValueError(f"data.split_roles entry {item.strip()!r} must be ROLE=SPLIT with ROLE "
                       f"one of {', '.join(ROLES)} and SPLIT a stored split "
                       "(train, val, dep, test)")
    aliases[role] = stored
  return dataclasses.replace(definition, split_aliases=aliases)


def config_fields(name: str) -> dict:
  """The optional ``config.data`` fields dataset ``name`` reads, with the defaults its readers
  use: for a named dataset the Grain loader's settings (``LOADER_DEFAULTS``), the fields every
  named dataset reads (``registry.COMMON_OPTIONS``) and its own (``DEFINITION.options``); for
  "npz", ``synthetic_examples``; for "synthetic" none (its ``synthetic_options`` are its
  own). ``configs/default.py``'s ``data_config`` declares them, so the command line can set
  each one."""
  if name == "synthetic":
    return {}
  if name == "npz":
    return {"synthetic_examples": COMMON_OPTIONS["synthetic_examples"]}
  return {**LOADER_DEFAULTS, **COMMON_OPTIONS, **registry.get(name).options}


def load(data_config, *, seed: int = 0):
  """Returns a dataset object (see ``data_pipelines.sources.base``) for ``config.data``."""
  del seed  # the data's content is seeded by data_config.data_seed; order by the trainer
  name = data_config.name
  if name == "synthetic":
    options = dict(data_config.get("synthetic_options", {}) or {})
    return make_synthetic(seed=data_config.get("data_seed", 0), **options)
  if name == "npz":
    return load_npz(data_config)
  definition = with_split_roles(registry.get(name), cfg(data_config, "split_roles",
                                                        COMMON_OPTIONS["split_roles"]))
  selected = modalities.select(cfg(data_config, "modalities", ""), definition.modalities,
                               where=name)
  if cfg(data_config, "synthetic", False):
    spec = definition.synthetic_spec(data_config)
    dropped = set(definition.modalities) - set(selected)   # companions of kept ones stay
    spec = {k: v for k, v in spec.items()
            if k not in dropped and k.removesuffix("_lengths") not in dropped}
    vocab_sizes, embeddings = definition.vocabulary(data_config, None)
    return RandomDataset(name=name, modalities=selected,
                         num_classes=definition.num_classes(data_config), spec=spec,
                         examples_per_split=int(cfg(data_config, "synthetic_examples",
                                                    COMMON_OPTIONS["synthetic_examples"])),
                         data_seed=int(cfg(data_config, "data_seed", 0)),
                         label_shape=tuple(definition.label_shape(data_config)),
                         finish=definition.synthetic_finish(data_config),
                         vocab_sizes=vocab_sizes, embeddings=embeddings,
                         device_preprocess=getattr(
                             definition.make_preprocess(data_config, selected), "device", None))
  return TfdsDataset(ensure_prepared(definition, data_config), definition, data_config,
                     selected)


__all__ = ["NAMES", "SPLITS", "ArrayDataset", "config_fields", "load"]
