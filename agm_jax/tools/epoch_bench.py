r"""End-to-end epoch benchmark: fabricated full-size CREMA-D clips, the real loader, the real step.

  python -m agm_jax.tools.epoch_bench --num_clips=64 --batch_size=16          # this CPU
  python -m agm_jax.tools.epoch_bench --num_clips=2048 --batch_size=64 \
      --num_workers=12 --config.method=joint                                  # a GPU host

Fabricates ``--num_clips`` training clips in CREMA-D's official raw layout
(``data_pipelines.fabricated.layouts.write_cremad``: 2.5 s wavs at 16 kHz and three 480x360
JPEG frames per clip, as the 1-fps frame folders hold), prepares them with the cremad builder,
and runs ``--config`` (default ``configs/cremad_agm.py``; competition probe off) on them:

* **loader alone**: one epoch of training batches read and thrown away (examples/s);
* **step alone**: the compiled train step repeated on one batch already on the device
  (examples/s; compilation and one warm-up step excluded);
* **whole epoch**: one epoch as the train loop runs it — batches loaded and transferred by the
  loop's background prefetch while the step runs — with each step waited for, so the time the
  loop spent blocked on the next batch is measured: ``wait_fraction`` = that time / the epoch's
  time. ``epoch_over_steps`` = the epoch's time / (steps x the median step time): 1.0 means the
  step never waited for data.

The LAST stdout line is one JSON object with those numbers, the batch size, worker count,
steps and device.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import data_pipelines
from agm_jax import xla_flags
from agm_jax.train import loop
from data_pipelines.fabricated.benchmark import fabricate_and_prepare


def define_flags() -> None:
  """The command line (defined only when run as a program, so importing this module next to
  another tool's flags is safe)."""
  config_flags.DEFINE_config_file("config", "configs/cremad_agm.py", "Config file.")
  flags.DEFINE_integer("num_clips", 64, "Fabricated training clips.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_integer("num_workers", 0, "Grain worker processes (data.num_workers).")
  flags.DEFINE_integer("step_repeats", 5, "Timed steps for the step alone.")


def epoch_benchmark(config, data_dir: str, *, batch_size: int, num_workers: int,
                    step_repeats: int = 5) -> dict:
  """The three measurements of the module docstring on a prepared cremad in ``data_dir``."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.data_dir, config.data.manual_dir = data_dir, ""
    config.data.synthetic = False
    config.data.num_workers = int(num_workers)
    config.batch_size = int(batch_size)
    config.competition.enabled = False
    config.num_seeds = 1
  run = loop.Run(config, dataset=data_pipelines.load(config.data, seed=config.seed))
  steps = run.steps_per_epoch
  examples = steps * batch_size

  t0 = time.perf_counter()
  for _ in run.train_batches(0):
    pass
  loader_s = time.perf_counter() - t0

  state = run.dp.put_state(run.init_state())
  active = np.bool_(True)
  batch = run.dp.put_batch(next(iter(run.train_batches(1))))
  for _ in range(2):   # compilation, then one warm-up step
    state, metrics = run.train_step(state, batch, active)
    jax.block_until_ready(metrics)
  times = []
  for _ in range(step_repeats):
    t = time.perf_counter()
    state, metrics = run.train_step(state, batch, active)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)

  waited = 0.0
  t0 = time.perf_counter()
  batches = loop.prefetch(run.train_batches(2), run.dp.put_batch)
  while True:
    t = time.perf_counter()
    batch = next(batches, None)
    waited += time.perf_counter() - t
    if batch is None:
      break
    state, metrics = run.train_step(state, batch, active)
    jax.block_until_ready(metrics)
  epoch_s = time.perf_counter() - t0
  close = getattr(run.dataset, "close", None)
  if close is not None:
    close()
  return {"method": config.method, "batch_size": batch_size, "num_workers": num_workers,
          "steps": steps, "device": jax.devices()[0].device_kind,
          "loader_examples_per_s": round(examples / loader_s, 1),
          "step_examples_per_s": round(batch_size / step_s, 1),
          "epoch_examples_per_s": round(examples / epoch_s, 1),
          "step_s": round(step_s, 4), "epoch_s": round(epoch_s, 2),
          "wait_fraction": round(waited / epoch_s, 3),
          "epoch_over_steps": round(epoch_s / (steps * step_s), 3)}


def main(argv):
  del argv
  xla_flags.use_cpu_defaults()   # before JAX starts: XLA reads its flags once
  f = flags.FLAGS
  if f.num_clips < f.batch_size:
    print(f"error: --num_clips {f.num_clips} gives no full batch of {f.batch_size}",
          file=sys.stderr)
    sys.exit(2)
  with tempfile.TemporaryDirectory() as root:
    data_dir = fabricate_and_prepare(root, f.num_clips)
    result = epoch_benchmark(f.config, data_dir, batch_size=f.batch_size,
                             num_workers=f.num_workers, step_repeats=f.step_repeats)
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
