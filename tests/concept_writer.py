"""Subprocess entry point of tests/test_faults.py: one run asking the shared concept cache for a
concept, with a stand-in for the trainer's ``fit`` that records who trained it.

  python -m tests.concept_writer CACHE_DIR LOG_DIR
"""

import os
import sys
import time

import numpy as np


class _Run:
  def evaluate(self, state, split):
    del state
    rows = 64 if split == "dep" else 32
    logits = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) / (7 if split == "dep" else 5)
    return {"acc": 0.5}, None, logits


def fake_fit(log_dir):
  def fit(config, workdir, dataset=None, epoch_hooks=()):
    del config, dataset, epoch_hooks
    with open(os.path.join(log_dir, f"trained-{os.getpid()}"), "w") as f:
      f.write(workdir)
    time.sleep(1.5)   # long enough for the other run to find the concept being trained
    return _Run(), None, {}
  return fit


def main(cache, log_dir):
  from agm_jax.train import competition  # noqa: PLC0415
  from tests.conftest import tiny_config  # noqa: PLC0415
  config = tiny_config(**{"competition.cache_dir": cache})
  out = competition.concept_outputs(config, "audio", None, fit=fake_fit(log_dir))
  np.savez(os.path.join(log_dir, f"read-{os.getpid()}.npz"), dep=out["dep"], test=out["test"])


if __name__ == "__main__":
  main(*sys.argv[1:3])
