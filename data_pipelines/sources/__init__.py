"""What the trainer reads: every dataset object ``data_pipelines.load`` returns comes from here.

* ``base.py``: the dataset contract (``modalities``, ``num_classes``, ``spec``,
  ``num_examples``, ``batches``), ``epoch_order``, ``ArrayDataset`` and ``cfg``;
* ``synthetic.py``: the embedded two-modality default (``DEFAULTS``, ``make_synthetic``);
* ``npz.py``: a folder of the user's own npz files;
* ``random_inputs.py``: random inputs of a dataset's shapes (``RandomDataset``,
  ``random_batch``);
* ``loader.py``: the Grain loader over a dataset that ``data_pipelines/builders/`` prepared.

Nothing here imports TFDS or Grain at module level.
"""
