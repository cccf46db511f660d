r"""Linear-probe evaluation of a finished run: each frozen encoder's features, a fresh linear
classifier per modality (BalanceBenchmark's LinearProbe, ``balancemm/trainer/
LinearProbe_trainer.py``: freeze the trained model, fit a new linear head, report each
modality's accuracy).

  python -m agm_jax.tools.linear_probe WORKDIR [WORKDIR …] [--C=1.0] [--max_iter=1000]

For each workdir (each ``seed_<s>/`` of a multi-seed one): the run's ``config.json`` and its
latest checkpoint; every modality's eval-mode encoder features of the train, val and test
splits; per modality a multinomial logistic regression on the standardised train features
(scikit-learn's ``LogisticRegression``, L-BFGS, ``C``, to convergence); its accuracy on val and
test. Written into the run's ``summary.json`` as ``linear_probe`` (``{"test/<m>": …,
"val/<m>": …, "train/<m>": …, "C": …}``) and printed as one JSON line per run.

Why logistic regression to convergence and not BalanceBenchmark's SGD-trained head: a probe
measures what the features hold, and a convex fit to its optimum makes the number independent
of a learning-rate schedule and an epoch budget (the protocol of the linear probes in the
representation-learning literature); the toolkit trains one head on the concatenated features
with the run's optimiser and reads per-modality accuracy from its slices.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from tqdm import tqdm

from agm_jax import subsets
from agm_jax.methods.base import inputs_of
from agm_jax.train import seeds as seeds_lib
from agm_jax.train import writer
from agm_jax.train.checkpoint import Checkpointer
from agm_jax.train.loop import Run

SPLITS = ("train", "val", "test")


class ProbeError(Exception):
  """A workdir that cannot be probed (one line, no traceback)."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ProbeError(f"{workdir} has no config.json (not a run's workdir)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore(run: Run, workdir: str):
  """The host state of ``workdir``'s latest checkpoint (stacked for a multi-seed run)."""
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, step = ckpt.restore(run.dp.replicate(run.init_state()))
  finally:
    ckpt.close()
  if step is None:
    raise ProbeError(f"{workdir} has no checkpoint to probe")
  return run.dp.host_state(state)


def encoder_features(run: Run, state, split: str) -> tuple[list[np.ndarray], np.ndarray]:
  """Every encoder's eval-mode features of ``split`` (in modality order) and its labels."""
  size = run.config.eval_batch_size

  @jax.jit
  def encode(params, batch_stats, batch):
    if run.preprocess is not None:
      batch = run.preprocess(batch)
    feats, _ = subsets.apply(run.model, params, batch_stats, inputs_of(batch), train=False,
                             method="encode")
    return tuple(feats)

  feats, labels = [], []
  batches = run.dataset.batches(split, batch_size=size, seed=run.config.seed, epoch=0,
                                shuffle=False, drop_remainder=False)
  for batch in tqdm(batches, desc=f"features {split}", unit="batch", leave=False,
                    total=-(-run.dataset.num_examples(split) // size)):
    out = encode(state.params, state.batch_stats, {k: np.asarray(v) for k, v in batch.items()})
    feats.append([np.asarray(f, np.float64) for f in out])
    labels.append(np.asarray(batch["label"]).reshape(-1))
  per_modality = [np.concatenate([f[m] for f in feats]) for m in range(len(run.modalities))]
  labels = np.concatenate(labels)
  if len(labels) != len(per_modality[0]):
    raise ProbeError("a linear probe needs one label per example; this task labels positions "
                     "within an example")
  return per_modality, labels


def fit_probe(train_x, train_y, *, C: float, max_iter: int, seed: int):
  """A standardiser and a multinomial logistic regression fitted on ``train_x``."""
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - only when probing
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

  probe = make_pipeline(StandardScaler(),
                        LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
  return probe.fit(train_x, train_y)


def probe_state(run: Run, state, *, C: float, max_iter: int, seed: int) -> dict:
  """``{"<split>/<m>": accuracy, …}`` of one state's encoders."""
  if not getattr(run.model, "separable", False):
    raise ProbeError("a linear probe needs per-modality encoders; this run's fusion "
                     f"{run.config.model.fusion!r} has none")
  data = {split: encoder_features(run, state, split) for split in SPLITS
          if run.dataset.num_examples(split)}
  out = {}
  for i, m in enumerate(run.modalities):
    probe = fit_probe(data["train"][0][i], data["train"][1], C=C, max_iter=max_iter, seed=seed)
    for split, (x, y) in data.items():
      out[f"{split}/{m}"] = float((probe.predict(x[i]) == y).mean())
  return out


def update_summary(directory: str, result: dict) -> None:
  path = os.path.join(directory, "summary.json")
  summary = {}
  if os.path.exists(path):
    with open(path) as f:
      summary = json.load(f)
  summary["linear_probe"] = result
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)


def probe_workdir(workdir: str, *, C: float = 1.0, max_iter: int = 1000) -> list[dict]:
  """Probes a finished run (each seed of a multi-seed one); returns one record per run."""
  config = load_config(workdir)
  run = Run(config)
  host = restore(run, workdir)
  dirs = writer.seed_dirs(workdir) if run.stacked else [workdir]
  states = seeds_lib.unstack(host, len(dirs)) if run.stacked else [host]
  records = []
  for directory, state, seed in zip(dirs, states, run.seeds if run.stacked else
                                    [int(config.seed)]):
    result = probe_state(run, state, C=C, max_iter=max_iter, seed=seed)
    result.update(C=C, max_iter=max_iter, probe="logistic_regression")
    update_summary(directory, result)
    records.append({"workdir": directory, "seed": seed, **result})
  return records


def define_flags():
  flags.DEFINE_float("C", 1.0, "Inverse L2 strength of the logistic regression.")
  flags.DEFINE_integer("max_iter", 1000, "L-BFGS iterations at most.")


def main(argv, *, C: float = 1.0, max_iter: int = 1000) -> int:
  workdirs = argv[1:]
  if not workdirs:
    print("usage: python -m agm_jax.tools.linear_probe WORKDIR [WORKDIR …]", file=sys.stderr)
    return 2
  try:
    for workdir in workdirs:
      for record in probe_workdir(workdir, C=C, max_iter=max_iter):
        print(json.dumps(record), flush=True)
  except ProbeError as e:
    print(f"agm_jax.linear_probe: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv, C=flags.FLAGS.C, max_iter=flags.FLAGS.max_iter)))
