r"""Prepares one dataset from its raw download into an array_record TFDS directory.

  python -m data_pipelines.builders.prepare --dataset=cremad --manual_dir=/data/CREMA-D \
      --data_dir=/data/tfds

prints the split sizes and the number of skipped examples; the result is
``DATA_DIR/<dataset>/<version>/`` and reads back with ``tfds.builder_from_directory``.
``load()`` calls :func:`ensure_prepared`, which prepares on first use when
``config.data.data_dir`` lacks the dataset and ``config.data.manual_dir`` is set.
"""

from __future__ import annotations

import json
import os

from data_pipelines.builders import registry
from data_pipelines.builders.common import LayoutError, check_manual_dir, prepare_command
from data_pipelines.sources.base import cfg


def default_data_dir() -> str:
  """TFDS's default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def builder_dir(definition: registry.DatasetDef, data_dir: str) -> str:
  return os.path.join(data_dir, definition.name, definition.version)


def prepared_name(path: str) -> str | None:
  """The dataset name recorded in ``path/dataset_info.json``, None if not a prepared copy."""
  info = os.path.join(path, "dataset_info.json")
  if not os.path.exists(info):
    return None
  with open(info) as f:
    return json.load(f).get("name")


def summary(builder) -> str:
  """``"cremad 1.0.0 in DIR: train 90, dep 20, test 9; skipped 3 missing, 1 unusable"``."""
  sizes = ", ".join(f"{s} {info.num_examples}" for s, info in builder.info.splits.items())
  meta = builder.info.metadata or {}
  missing = len(meta.get("skipped_missing", []))
  corrupt = sum(len(v) for v in meta.get("skipped_corrupt", {}).values())
  return (f"{builder.name} {builder.version} in {builder.data_dir}: {sizes}; skipped "
          f"{missing} missing, {corrupt} unusable")


def prepare(name: str, manual_dir: str, data_dir: str, *, verbose: bool = True) -> str:
  """Builds dataset ``name`` from ``manual_dir`` into ``data_dir`` (a no-op if already there)
  and returns the prepared directory. Raises ``LayoutError`` naming the expected layout."""
  definition = registry.get(name)
  check_manual_dir(name, manual_dir, definition.layout)
  import tensorflow_datasets as tfds  # noqa: PLC0415
  if not verbose:
    tfds.disable_progress_bar()
  builder = definition.builder_class()(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  reloaded = tfds.builder_from_directory(builder.data_dir)
  print(summary(reloaded), flush=True)
  return str(builder.data_dir)


def ensure_prepared(definition: registry.DatasetDef, data_config) -> str:
  """The prepared directory for ``data_config`` (``data_dir``, or ``data_dir`` itself when it
  is a prepared copy), preparing it from ``manual_dir`` when absent."""
  data_dir = cfg(data_config, "data_dir", "") or default_data_dir()
  if prepared_name(data_dir) == definition.name:
    return data_dir
  path = builder_dir(definition, data_dir)
  if prepared_name(path) == definition.name:
    return path
  manual_dir = cfg(data_config, "manual_dir", "")
  if not manual_dir:
    raise LayoutError(
        f"{definition.name} is not prepared in data_dir {data_dir!r} (no {path}) and "
        f"data.manual_dir is not set. Point data.manual_dir at the raw download, laid out as\n"
        f"{definition.layout.rstrip()}\n"
        f"or prepare it once with: {prepare_command(definition.name)}")
  return prepare(definition.name, manual_dir, data_dir)


def main(argv):
  del argv
  from absl import flags  # noqa: PLC0415
  f = flags.FLAGS
  try:
    prepare(f.dataset, f.manual_dir, f.data_dir or default_data_dir())
  except (LayoutError, ValueError, ImportError) as e:  # a message for the user, not a trace
    raise SystemExit(f"error: {e}") from e


def define_flags() -> None:
  """The command line (defined only when run as a program)."""
  from absl import flags  # noqa: PLC0415
  flags.DEFINE_enum("dataset", None, list(registry.NAMES), "Dataset to prepare.")
  flags.DEFINE_string("manual_dir", None, "Folder with the raw download (see the builder's "
                      "docstring for its layout).")
  flags.DEFINE_string("data_dir", "", "Where the prepared copy goes (default: TFDS's).")
  flags.mark_flags_as_required(["dataset", "manual_dir"])


if __name__ == "__main__":
  from absl import app  # noqa: PLC0415
  define_flags()
  app.run(main)
