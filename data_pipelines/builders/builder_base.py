"""The TFDS base every raw-layout builder derives from.

It reads ``manual_dir`` only (nothing is downloaded), writes examples in generation order
(``disable_shuffling``: record i of a split is the i-th kept entry of its list), skips and
counts unreadable examples, and records the skipped ones in the prepared copy's
``metadata.json`` (``skipped_missing``, ``skipped_corrupt``). Builders are not registered with
TFDS (``skip_registration``); ``prepare.py`` instantiates them directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.builders import registry
from data_pipelines.builders.common import CorruptInput, SkipLog, check_manual_dir


class RawBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: subclasses set ``DEFINITION`` and implement ``_features`` and
  ``_split_generators``, producing examples with :meth:`_emit`."""

  DEFINITION: registry.DatasetDef
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""

  def __init_subclass__(cls, **kwargs):
    kwargs.setdefault("skip_registration", True)
    definition = getattr(cls, "DEFINITION", None)
    if definition is not None:  # one source of truth for the version and the layout
      cls.VERSION = tfds.core.Version(definition.version)
      cls.RELEASE_NOTES = {definition.version: "First release."}
      cls.MANUAL_DOWNLOAD_INSTRUCTIONS = definition.layout
    super().__init_subclass__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The builder's source file. (TFDS's own lookup needs the ``importlib_resources``
    backport for package modules; this plain one does not.)"""
    return epath.Path(inspect.getfile(cls))

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.skips = SkipLog(self.name)

  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION, features=self._features(),
        homepage=self.HOMEPAGE or None, citation=self.CITATION or None,
        disable_shuffling=True, metadata=tfds.core.MetadataDict())

  def _root(self, dl_manager) -> str:
    """``manual_dir``, checked against the layout (``LayoutError`` otherwise)."""
    definition = self.DEFINITION
    manual_dir = getattr(dl_manager, "_manual_dir", None)  # .manual_dir asserts on absence
    return check_manual_dir(self.name, manual_dir, definition.layout, definition.required)

  def _emit(self, split: str, items: Iterable[tuple[str, Any]],
            make_example: Callable[[Any], dict]) -> Iterator[tuple[str, dict]]:
    """Yields ``(key, make_example(item))``; an item raising ``CorruptInput`` is skipped with
    a warning and counted. Reports the split's counts when done."""
    written = 0
    for key, item in items:
      try:
        example = make_example(item)
      except CorruptInput as e:
        self.skips.skip(split, key, str(e))
        continue
      written += 1
      yield key, example
    self.skips.report_split(split, written)
    self.info.metadata.update(self.skips.as_metadata())

  def _generators(self, splits: dict[str, list], make: Callable[[str, list], Iterator]
                  ) -> dict[str, Iterator]:
    """``{split: make(split, items)}`` for the splits that list any item (TFDS cannot write an
    empty split; a dataset without one reports it missing at load time)."""
    out = {}
    for split, items in splits.items():
      if items:
        out[split] = make(split, items)
      else:
        print(f"{self.name}/{split}: no examples listed; the split is not written", flush=True)
    return out

  def _missing(self, keys: Iterable[str]) -> None:
    """Records examples listed in the split files but absent from ``manual_dir``."""
    self.skips.missing.extend(keys)
    self.skips.report_missing()
    self.info.metadata.update(self.skips.as_metadata())
