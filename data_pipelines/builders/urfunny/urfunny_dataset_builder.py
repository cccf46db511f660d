"""TFDS builder for UR-Funny from MultiBench's processed pickle.

Reads (``manual_dir``; the text below is the package's ``LAYOUT``, filled in at import)::

{LAYOUT}

(``urfunny.pkl`` is accepted as the name too.) Splits train / val / test are the file's
train / valid / test. Each example: ``audio``, ``visual``, ``text`` sequences moved to the
front and zero-padded at the end, their ``"<m>_lengths"``, ``label`` (humour: 1 if the stored
label is >= 1, as the AGM loader) and ``id``; see ``data_pipelines/builders/affect.py`` for the
per-example processing (non-finite -> 0, empty-text examples dropped and counted).
"""

from __future__ import annotations

from data_pipelines.builders.affect_builder import AffectBuilder
from data_pipelines.builders.urfunny import DEFINITION

__doc__ = __doc__.replace("{LAYOUT}", DEFINITION.layout)  # one source of truth


class Builder(AffectBuilder):
  """UR-Funny: word-aligned audio / visual / text features; binary humour label."""

  DEFINITION = DEFINITION
  PICKLES = ("humor.pkl", "urfunny.pkl")
  DESCRIPTION = "UR-Funny humour detection (MultiBench's processed features)."
  HOMEPAGE = "https://github.com/ROC-HCI/UR-FUNNY"
  CITATION = """@inproceedings{hasan2019ur, title={UR-FUNNY: A Multimodal Language Dataset for
Understanding Humor}, author={Hasan, Md Kamrul and others}, booktitle={EMNLP-IJCNLP},
year={2019}}"""

  def label_fields(self, raw_label):
    return {"label": 0 if raw_label[0] < 1 else 1}
