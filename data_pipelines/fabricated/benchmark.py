r"""Loader throughput (examples/s) on CREMA-D-shaped data.

  python -m data_pipelines.benchmark --num_workers=0,1,2 --batch_size=16
  python -m data_pipelines.benchmark --data_dir=/data/tfds   # a prepared cremad

Without ``--data_dir`` it fabricates ``--num_clips`` training clips (``layouts.write_cremad``:
wav of 2.5 s at 16 kHz, three 480x360 JPEG frames each, like CREMA-D's 1-fps frames) in a
temporary folder and prepares them with the cremad builder. For each worker count it reads
``--epochs`` consecutive passes over the train split (augmented, shuffled per epoch) at
``--batch_size`` and reports the time to the first batch (starting the pipeline and its worker
processes) and the throughput from then on (examples after the first batch / time after it).
Each process (the main one with 0 workers, else each worker) reads with ``--read_threads``
threads, so ``--read_threads=1`` shows how throughput scales with worker processes alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import ml_collections
from absl import app, flags

import data_pipelines
from data_pipelines.builders import prepare
from data_pipelines.fabricated import layouts


def define_flags() -> None:
  """The command line (defined only when run as a program: other tools import this module)."""
  flags.DEFINE_list("num_workers", ["0", "1", "2"], "Worker counts to time.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_integer("epochs", 3, "Passes over the train split per worker count.")
  flags.DEFINE_integer("num_clips", 64, "Fabricated training clips (without data_dir).")
  flags.DEFINE_string("data_dir", "", "A data_dir holding a prepared cremad.")
  flags.DEFINE_string("split", "train", "Split to read (train is augmented).")
  flags.DEFINE_integer("read_threads", None, "Reading threads per process "
                       "(config.data.read_threads; default: the loader's).")


def fabricate_and_prepare(root: str, num_clips: int) -> str:
  """CREMA-D-shaped raw clips under ``root/raw``, prepared into ``root/tfds``."""
  num_train = -(-num_clips * 10 // 9)  # train keeps the first 90% of the list
  layouts.write_cremad(os.path.join(root, "raw"), num_train=num_train, num_test=4, frames=3,
                       frame_size=(360, 480), seconds=2.5)
  prepare.prepare("cremad", os.path.join(root, "raw"), os.path.join(root, "tfds"),
                  verbose=False)
  return os.path.join(root, "tfds")


def time_passes(dataset, split: str, batch_size: int, epochs: int) -> tuple[float, float, int]:
  """``(seconds to the first batch, seconds after it, examples after it)`` over ``epochs``
  consecutive passes (epoch ``e`` in its own order)."""
  t0 = time.perf_counter()
  t_first, count = None, 0
  for epoch in range(epochs):
    for batch in dataset.batches(split, batch_size=batch_size, seed=0, epoch=epoch,
                                 shuffle=True, drop_remainder=True):
      if t_first is None:
        t_first = time.perf_counter()
      else:
        count += len(batch["label"])
  return t_first - t0, time.perf_counter() - t_first, count


def run(data_dir: str, worker_counts, batch_size: int, epochs: int, split: str,
        read_threads: int | None = None) -> list[dict]:
  results = []
  for workers in worker_counts:
    config = ml_collections.ConfigDict(dict(name="cremad", data_dir=data_dir, manual_dir="",
                                            modalities="", num_workers=int(workers)))
    if read_threads is not None:
      config.read_threads = read_threads
    dataset = data_pipelines.load(config)
    startup, seconds, count = time_passes(dataset, split, batch_size, epochs)
    dataset.close()
    results.append({"num_workers": int(workers), "read_threads": dataset.read_threads,
                    "batch_size": batch_size,
                    "examples_per_epoch": dataset.num_examples(split), "epochs": epochs,
                    "first_batch_s": round(startup, 2),
                    "examples_per_s": round(count / seconds, 1)})
    print(json.dumps(results[-1]), flush=True)
  return results


def main(argv):
  del argv
  f = flags.FLAGS
  with tempfile.TemporaryDirectory() as root:   # (left empty when --data_dir is given)
    data_dir = f.data_dir or fabricate_and_prepare(root, f.num_clips)
    run(data_dir, f.num_workers, f.batch_size, f.epochs, f.split, f.read_threads)


if __name__ == "__main__":
  define_flags()
  app.run(main)
