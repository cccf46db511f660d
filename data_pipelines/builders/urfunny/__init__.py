"""UR-Funny (humour or not; audio, visual and text feature sequences): the load-side definition.

Inputs: ``audio`` (L, 81), ``visual`` (L, 371), ``text`` (L, 300) float32 word-aligned
sequences (L = 50 in MultiBench's file), each with an int32 ``"<m>_lengths"`` companion.
Splits: train / val / test of the file; ``dep`` is ``val``. The builder is
``urfunny_dataset_builder.Builder``.
"""

from __future__ import annotations

from data_pipelines.builders import preprocess
from data_pipelines.builders.affect import MODALITIES, affect_spec
from data_pipelines.builders.registry import DatasetDef

DIMS = {"audio": 81, "visual": 371, "text": 300}

LAYOUT = """\
  RAW/
    humor.pkl      MultiBench's processed UR-Funny (github.com/pliang279/MultiBench, affective
                   computing datasets; the AGM UR-Funny loader reads the same file): a pickled
                   {"train"|"valid"|"test": {"vision": (N, 50, 371), "audio": (N, 50, 81),
                    "text": (N, 50, 300), "labels": (N, 1), "id": (N, …)}}"""


def make_preprocess(data_config, modalities):
  del data_config
  return preprocess.ArrayPreprocess(modalities=tuple(modalities), lengths=tuple(modalities))


DEFINITION = DatasetDef(
    name="urfunny", modalities=MODALITIES, split_aliases={"dep": "val"}, layout=LAYOUT,
    required=("humor.pkl|urfunny.pkl",), make_preprocess=make_preprocess,
    synthetic_spec=lambda data_config: affect_spec(DIMS), num_classes=lambda data_config: 2)
