r"""Linear-probe evaluation of a finished run: every encoder frozen, a fresh linear classifier
per modality on its features (BalanceBenchmark's LinearProbe, ``balancemm/trainer/
LinearProbe_trainer.py`` with the ``train`` settings of ``configs/global_config.yaml``).

  python -m agm_jax.tools.linear_probe WORKDIR [WORKDIR …] [--epochs=30]
      [--learning_rate=1e-3] [--batch_size=32] [--weight_decay=0.01]
      [--lr_step_epochs=10] [--lr_gamma=0.1]

For each workdir (each ``seed_<s>/`` of a multi-seed one, ``writer.seed_dirs``): the run's
``config.json`` and its latest checkpoint; every modality's eval-mode encoder features of the
train, val and test splits, computed once; per modality a fresh ``Dense(K)`` trained on the
train features with minibatch AdamW and a step learning-rate decay; its accuracy on each split.
Written into the run's ``summary.json`` as ``linear_probe`` (``{"<m>": test accuracy, …,
"val/<m>": …, "train/<m>": …, "epochs": N, …settings}``) and printed as one JSON line per run.

Training procedure, all defaults BalanceBenchmark's: ``total_epoch: 30``; the optimiser
``AdamW`` (PyTorch's: betas (0.9, 0.999), eps 1e-8, decoupled ``weight_decay: 0.01``, the bias
decayed too) at ``base_lr: 0.001`` (``lr: -1``: ``utils/optimizer.py`` takes ``base_lr``
unscaled); ``StepLR`` with ``step_size: 10``, ``gamma: 0.1`` stepped once an epoch; batches of
``eff_batch_size: 32``, reshuffled every epoch, the last incomplete one dropped
(``drop_last: true``); cross-entropy; the head of the last epoch (the toolkit's ``val_loop``
resets its best accuracy before comparing, so it saves, and tests, every epoch's head). Minibatch
and not full-batch so that these settings mean what they mean there; the features are computed
once, so the 30 epochs are one compiled ``lax.scan`` over a few hundred small matrix products.

One difference, deliberate: the toolkit trains one head on the concatenated features and reads
each modality's accuracy from its weight slice (plus bias / k); here each modality gets its own
head, so a modality's number measures only its encoder's features, not a slice of a head fitted
to all of them jointly. Deterministic: the head's initialisation and the epochs' orders come
from the run's seed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from tqdm import tqdm

from agm_jax import subsets, xla_flags
from agm_jax.methods.base import inputs_of
from agm_jax.train import seeds as seeds_lib
from agm_jax.train import writer
from agm_jax.train.checkpoint import Checkpointer
from agm_jax.train.loop import Run

SPLITS = ("train", "val", "test")


class ProbeError(Exception):
  """A workdir that cannot be probed (one line, no traceback)."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """The probe's training settings; defaults from BalanceBenchmark's ``global_config.yaml``."""
  epochs: int = 30               # train.parameter.total_epoch
  learning_rate: float = 1e-3    # train.parameter.base_lr
  batch_size: int = 32           # dataloader.eff_batch_size
  weight_decay: float = 0.01     # train.optimizer (AdamW) weight_decay
  lr_step_epochs: int = 10       # train.scheduler (StepLR) step_size
  lr_gamma: float = 0.1          # train.scheduler (StepLR) gamma

  def check(self) -> Settings:
    for name in ("epochs", "batch_size", "lr_step_epochs"):
      if getattr(self, name) < 1:
        raise ProbeError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if not self.learning_rate > 0:
      raise ProbeError(f"--learning_rate must be > 0, got {self.learning_rate}")
    return self

  def record(self) -> dict:
    return {**dataclasses.asdict(self), "optimizer": "adamw"}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  if not os.path.isdir(workdir):
    raise ProbeError(f"{workdir} is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ProbeError(f"{workdir} has no config.json (not a run's workdir)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def build_run(config) -> Run:
  """The run of ``config``; a one-line error for a model without per-modality encoders."""
  try:
    run = Run(config)
  except ValueError as e:
    raise ProbeError(f"cannot rebuild the run from its config.json: {e}") from None
  if not getattr(run.model, "separable", False):
    raise ProbeError("a linear probe needs per-modality encoders; this run's fusion "
                     f"{run.config.model.fusion!r} has none (input_early and the stream "
                     "fusions exchange information inside the encoders)")
  return run


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


def make_encoder(run: Run):
  """A jitted ``(params, batch_stats, batch) -> per-modality eval-mode features``."""

  @jax.jit
  def encode(params, batch_stats, batch):
    if run.preprocess is not None:
      batch = run.preprocess(batch)
    feats, _ = subsets.apply(run.model, params, batch_stats, inputs_of(batch), train=False,
                             method="encode")
    return tuple(feats)

  return encode


def encoder_features(run: Run, encode, state, split: str) -> tuple[list[np.ndarray], np.ndarray]:
  """Every encoder's eval-mode features of ``split`` (in modality order) and its labels."""
  size = run.config.eval_batch_size
  feats, labels = [], []
  batches = run.dataset.batches(split, batch_size=size, seed=run.config.seed, epoch=0,
                                shuffle=False, drop_remainder=False)
  for batch in tqdm(batches, desc=f"features {split}", unit="batch", leave=False,
                    total=-(-run.dataset.num_examples(split) // size)):
    out = encode(state.params, state.batch_stats, {k: np.asarray(v) for k, v in batch.items()})
    feats.append([np.asarray(f, np.float32).reshape(len(f), -1) for f in out])
    labels.append(np.asarray(batch["label"]).reshape(-1))
  per_modality = [np.concatenate([f[m] for f in feats]) for m in range(len(run.modalities))]
  labels = np.concatenate(labels)
  if len(labels) != len(per_modality[0]):
    raise ProbeError("a linear probe needs one label per example; this task labels positions "
                     "within an example")
  k = int(run.dataset.num_classes)
  if not (np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() < k):
    raise ProbeError(f"a linear probe needs class labels in [0, {k}); the {split} split has "
                     f"{labels.dtype} labels")
  return per_modality, labels


@functools.partial(jax.jit, static_argnames=("num_classes", "settings"))
def train_head(x, y, seed, *, num_classes: int, settings: Settings):
  """A fresh ``Dense(num_classes)`` on features ``x`` [n, d] and labels ``y`` [n]: AdamW with
  a staircase decay (PyTorch's StepLR), ``settings.epochs`` shuffled epochs of full batches.
  Returns the head's parameters."""
  n = x.shape[0]
  batch = min(settings.batch_size, n)
  steps = n // batch
  head = nn.Dense(num_classes)
  init_key, order_key = jax.random.split(jax.random.PRNGKey(seed))
  params = head.init(init_key, x[:1])
  schedule = optax.exponential_decay(settings.learning_rate,
                                     transition_steps=settings.lr_step_epochs * steps,
                                     decay_rate=settings.lr_gamma, staircase=True)
  tx = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=settings.weight_decay)

  def loss_fn(p, xb, yb):
    logits = head.apply(p, xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, idx):
    p, opt = carry
    grads = jax.grad(loss_fn)(p, x[idx], y[idx])
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  def epoch(carry, e):
    order = jax.random.permutation(jax.random.fold_in(order_key, e), n)[:steps * batch]
    return jax.lax.scan(step, carry, order.reshape(steps, batch))[0], None

  (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jnp.arange(settings.epochs))
  return params


def accuracy(params, x, y) -> float:
  logits = x @ np.asarray(params["params"]["kernel"]) + np.asarray(params["params"]["bias"])
  return float((logits.argmax(-1) == y).mean())


def probe_state(run: Run, encode, state, *, settings: Settings, seed: int) -> dict:
  """``{"<m>": test accuracy, "<split>/<m>": accuracy, …}`` of one state's encoders."""
  data = {split: encoder_features(run, encode, state, split) for split in SPLITS
          if run.dataset.num_examples(split)}
  if "train" not in data:
    raise ProbeError("the run's dataset has no train split to fit the probe on")
  out = {}
  train_x, train_y = data["train"]
  for i, m in enumerate(tqdm(run.modalities, desc="probe heads", unit="modality", leave=False)):
    params = train_head(jnp.asarray(train_x[i]), jnp.asarray(train_y), seed,
                        num_classes=int(run.dataset.num_classes), settings=settings)
    for split, (x, y) in data.items():
      out[f"{split}/{m}"] = accuracy(params, x[i], y)
    if "test" in data:
      out[m] = out[f"test/{m}"]
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


def probe_workdir(workdir: str, settings: Settings = Settings()) -> list[dict]:
  """Probes a finished run (each seed of a multi-seed one); returns one record per run."""
  settings.check()
  config = load_config(workdir)
  run = build_run(config)
  host = restore(run, workdir)
  encode = make_encoder(run)
  if run.stacked:
    dirs, states, seeds = (writer.seed_dirs(workdir), seeds_lib.unstack(host, len(run.seeds)),
                           run.seeds)
    if len(dirs) != len(seeds):
      raise ProbeError(f"{workdir} has {len(dirs)} seed_<s>/ folders for {len(seeds)} seeds")
  else:
    dirs, states, seeds = [workdir], [host], [int(config.seed)]
  records = []
  for directory, state, seed in zip(dirs, states, seeds):
    result = {**probe_state(run, encode, state, settings=settings, seed=int(seed)),
              **settings.record()}
    update_summary(directory, result)
    records.append({"workdir": directory, "seed": int(seed), **result})
  return records


def define_flags():
  d = Settings()
  flags.DEFINE_integer("epochs", d.epochs, "Epochs of the probe heads' training.")
  flags.DEFINE_float("learning_rate", d.learning_rate, "AdamW's initial learning rate.")
  flags.DEFINE_integer("batch_size", d.batch_size, "Minibatch size (the last partial dropped).")
  flags.DEFINE_float("weight_decay", d.weight_decay, "AdamW's decoupled weight decay.")
  flags.DEFINE_integer("lr_step_epochs", d.lr_step_epochs, "Epochs between learning-rate decays.")
  flags.DEFINE_float("lr_gamma", d.lr_gamma, "Learning-rate factor at each decay.")


def settings_from_flags() -> Settings:
  f = flags.FLAGS
  return Settings(epochs=f.epochs, learning_rate=f.learning_rate, batch_size=f.batch_size,
                  weight_decay=f.weight_decay, lr_step_epochs=f.lr_step_epochs,
                  lr_gamma=f.lr_gamma)


def main(argv, settings: Settings = Settings()) -> int:
  """Probes every workdir in ``argv[1:]``, one JSON line per run; 2 with a one-line error."""
  xla_flags.use_cpu_defaults()   # before JAX starts: XLA reads its flags once
  workdirs = argv[1:]
  if not workdirs:
    print("usage: python -m agm_jax.tools.linear_probe WORKDIR [WORKDIR …]", file=sys.stderr)
    return 2
  try:
    for workdir in workdirs:
      for record in probe_workdir(workdir, settings):
        print(json.dumps(record), flush=True)
  except ProbeError as e:
    print(f"agm_jax.linear_probe: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv, settings_from_flags())))
