"""CMU-MOSEI (sentiment; audio, visual and text feature sequences): the load-side definition.

Inputs: ``audio`` (L, 74), ``visual`` (L, 35), ``text`` (L, 300) float32 word-aligned sequences
(L = 50), each with an int32 ``"<m>_lengths"`` companion. Splits: train / val / test of the
file; ``dep`` is ``val``. The builder is ``cmu_mosei_dataset_builder.Builder``.

``data_config`` field: ``task`` — "binary" (default; negative vs non-negative sentiment, the
AGM code's ``cmumosei_2``) or "7class" (the AGM code's ``cmumosei_7`` bins of the sentiment).
"""

from __future__ import annotations

from data_pipelines.builders import preprocess
from data_pipelines.builders.affect import MODALITIES, affect_spec
from data_pipelines.builders.registry import DatasetDef
from data_pipelines.sources.base import cfg

DIMS = {"audio": 74, "visual": 35, "text": 300}
TASKS = {"binary": ("label", 2), "7class": ("sentiment7", 7)}

LAYOUT = """\
  RAW/
    mosei_senti_data.pkl   MultiBench's aligned CMU-MOSEI (github.com/pliang279/MultiBench,
                           affective computing datasets; CMU-MultimodalSDK features first
                           released with MulT): a pickled
                           {"train"|"valid"|"test": {"vision": (N, 50, 35), "audio": (N, 50, 74),
                            "text": (N, 50, 300), "labels": (N, 1, 1) sentiment in [-3, 3],
                            "id": (N, …)}}"""


OPTIONS = dict(task="binary")


def task(data_config) -> tuple[str, int]:
  name = cfg(data_config, "task", OPTIONS["task"])
  if name not in TASKS:
    raise ValueError(f"unknown cmu_mosei task {name!r}; valid: {', '.join(TASKS)}")
  return TASKS[name]


def make_preprocess(data_config, modalities):
  return preprocess.ArrayPreprocess(modalities=tuple(modalities), lengths=tuple(modalities),
                                    label=task(data_config)[0])


DEFINITION = DatasetDef(
    name="cmu_mosei", modalities=MODALITIES, split_aliases={"dep": "val"}, layout=LAYOUT,
    required=("mosei_senti_data.pkl|mosei.pkl",), make_preprocess=make_preprocess,
    synthetic_spec=lambda data_config: affect_spec(DIMS),
    num_classes=lambda data_config: task(data_config)[1], options=OPTIONS)
