"""TFDS builders from the papers' raw downloads, and what the prepared datasets are.

One folder per dataset (``cremad``, ``avmnist``, ``kinetics_sounds``, ``urfunny``,
``cmu_mosei``, ``ave``, ``mosei_tbje``): its ``__init__.py`` holds the ``DEFINITION`` the
loader reads (modalities, splits, preprocessing, the raw layout) and
``<name>_dataset_builder.py`` the TFDS builder. Shared by them:

* ``registry.py``: the dataset names and ``DatasetDef``;
* ``prepare.py``: prepares a raw download into an array_record copy
  (``python -m data_pipelines.builders.prepare --dataset=cremad --manual_dir=RAW --data_dir=OUT``
  for any of the names above; ``load()`` calls it on first use);
* ``builder_base.py`` (the TFDS base class), ``common.py`` (errors, split rules, skip log);
* ``audio.py``, ``images.py``, ``video.py``: decoding and the papers' spectrograms and frames;
* ``preprocess.py``: per-example transforms from a stored record to a batch's arrays (run by
  the loader);
* ``affect.py``, ``affect_builder.py``: the MultiBench affect pickles (UR-Funny, CMU-MOSEI);
* ``text.py``: words to token ids, the vocabulary file and GloVe rows (TBJE's CMU-MOSEI).
"""
