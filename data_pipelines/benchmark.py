r"""Loader throughput (examples/s) on CREMA-D-shaped data: one JSON line per worker count.

  python -m data_pipelines.benchmark --num_workers=0,1,2 --batch_size=16
  python -m data_pipelines.benchmark --data_dir=/data/tfds   # a prepared cremad

The entry point of ``data_pipelines.fabricated.benchmark`` (its docstring has the details).
"""

from absl import app

from data_pipelines.fabricated.benchmark import define_flags, main

if __name__ == "__main__":
  define_flags()
  app.run(main)
