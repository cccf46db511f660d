"""TFDS builder for CMU-MOSEI from MultiBench's aligned feature pickle.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

(``mosei.pkl`` is accepted as the name too.) Splits train / val / test are the file's
train / valid / test. Each example: ``audio``, ``visual``, ``text`` sequences moved to the
front and zero-padded at the end, their ``"<m>_lengths"``, ``label`` (1 if the sentiment is
>= 0, the AGM code's binary task), ``sentiment`` (the raw score, for the 7-class task) and
``id``; see ``data_pipelines/builders/affect.py`` for the per-example processing.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.affect_builder import AffectBuilder
from data_pipelines.builders.cmu_mosei import DEFINITION

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth


class Builder(AffectBuilder):
  """CMU-MOSEI: word-aligned audio / visual / text features; sentiment labels."""

  DEFINITION = DEFINITION
  PICKLES = ("mosei_senti_data.pkl", "mosei.pkl")
  DESCRIPTION = "CMU-MOSEI sentiment (MultiBench's aligned CMU-MultimodalSDK features)."
  HOMEPAGE = "https://github.com/CMU-MultiComp-Lab/CMU-MultimodalSDK"
  CITATION = """@inproceedings{zadeh2018multimodal, title={Multimodal Language Analysis in the
Wild: CMU-MOSEI Dataset and Interpretable Dynamic Fusion Graph}, author={Zadeh, AmirAli Bagher
and others}, booktitle={ACL}, year={2018}}"""

  def extra_features(self):
    return {"sentiment": tfds.features.Scalar(dtype=np.float32)}

  def label_fields(self, raw_label):
    sentiment = float(raw_label[0])
    return {"label": 0 if sentiment < 0 else 1, "sentiment": sentiment}
