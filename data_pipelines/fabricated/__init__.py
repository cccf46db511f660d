"""Fabricated raw data, for tests and benchmarks only (no code in ``sources/`` or ``builders/``
uses it).

* ``layouts.py``: a tiny raw download of every dataset, written from random numbers, laid out
  as its builder expects;
* ``benchmark.py``: loader throughput on fabricated CREMA-D clips
  (``python -m data_pipelines.fabricated.benchmark``).
"""
