"""The one train loop every experiment uses: epochs of jitted steps, evaluation on val and test,
metrics lines, checkpoints and resume. It knows no dataset by name: the data come from
``data_pipelines.load(config.data)`` through the interface of ``data_pipelines.sources.base``."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import data_pipelines
from agm_jax import methods, modalities, subsets
from agm_jax import metrics as metrics_lib
from agm_jax.methods.base import Copies, check_task
from agm_jax.models import build_model
from agm_jax.models.classifier import OUTPUT_LAYER
from agm_jax.train import competition, guard, lock, parallel, per_method
from agm_jax.train import seeds as seeds_lib
from agm_jax.train import state as state_lib
from agm_jax.train.checkpoint import Checkpointer
from agm_jax.train.competition import CompetitionProbe
from agm_jax.train.steps import make_steps, step_flops
from agm_jax.train.writer import MetricWriter, seed_dir
from data_pipelines.sources.base import is_regression


def prefetch(iterator: Iterator[dict], put: Callable = jax.device_put,
             size: int = 2) -> Iterator[dict]:
  """Loads and transfers (``put``) the next batches on a background thread while the step
  runs."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def work():
    try:
      for batch in iterator:
        q.put(put(batch))
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
      q.put(e)
    q.put(done)

  threading.Thread(target=work, daemon=True).start()
  while (item := q.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item


class Accumulator:
  """Keeps step metrics on device until a line is logged (one host transfer per line)."""

  def __init__(self, items=()):
    self._items: list[dict] = list(items)   # (a resumed run: the steps before its checkpoint)

  def host_items(self) -> list[dict]:
    """The accumulated steps' metrics as host floats (saved with a checkpoint between lines)."""
    return list(self._fetch())

  def add(self, metrics: dict) -> None:
    self._items.append(metrics)

  def __len__(self):
    return len(self._items)

  def _fetch(self) -> list[dict]:
    """Host floats (a pmap step's per-device copies are equal: their mean)."""
    self._items = [{k: float(np.mean(v)) for k, v in m.items()}
                   for m in jax.device_get(self._items)]
    return self._items

  def check(self, last_step: int) -> None:
    """Raises NonFiniteError naming the first bad step among those accumulated."""
    self._fetch()
    bad = guard.first_nonfinite(self._items, last_step - len(self._items) + 1)
    if bad is not None:
      raise guard.NonFiniteError(*bad)

  def pop_mean(self) -> dict[str, float]:
    items, self._items = self._fetch(), []
    return {k: float(np.mean([m[k] for m in items])) for k in items[0]}


class Run:
  """Everything a run builds before its first step (also used by the benchmark and tests).

  The config is read here, once: the method's section becomes its typed hyper-parameters
  (``methods.hparams``), the ``subsets`` section a ``subsets.Settings``; the jitted steps see
  only the :class:`methods.Context` built from them."""

  def __init__(self, config, *, dataset=None):
    config = per_method.resolve(config)
    self.config = config
    if dataset is None:   # process 0 prepares the data if needed, then every process reads it
      dataset = parallel.primary_first(lambda: data_pipelines.load(config.data, seed=config.seed),
                                       "agm_jax:load_data")
    self.dataset = dataset
    self.method = methods.get(config.method)
    self.hp = methods.hparams(self.method, config)
    check_task(config.method, regression=is_regression(self.dataset))
    data_mods = modalities.select(config.data.modalities, self.dataset.modalities)
    model_mods, mono_mods = self.method.modalities(self.hp, config.model.fusion, data_mods)
    self.modalities = tuple(model_mods)
    self.dp = parallel.DataParallel(config.parallel.mode, config.batch_size,
                                    config.eval_batch_size)
    self.axis_name = parallel.axis_name(config)
    self.model = build_model(config.model, self.modalities, self.dataset.num_classes,
                             self.dataset.spec, bn_axis_name=self.axis_name,
                             vocab_sizes=getattr(self.dataset, "vocab_sizes", None))
    if self.method.requires_separable and not getattr(self.model, "separable", False):
      raise ValueError(f"method {config.method!r} needs per-modality branches; fusion "
                       f"{config.model.fusion!r} has none (AGM works with any fusion)")
    n_train = self.dataset.num_examples("train")
    if n_train < config.batch_size:
      raise ValueError(f"batch_size {config.batch_size} exceeds the {n_train} training examples")
    # drop_last False keeps the last partial training batch (PyTorch's DataLoader default, as
    # the released AGM code trains); it must split evenly over the devices.
    self.drop_last = bool(config.get("drop_last", True))
    rest = n_train % config.batch_size
    if not self.drop_last and rest and (rest % jax.device_count() or self.dp.process_count > 1):
      raise ValueError(f"drop_last=False leaves a last batch of {rest} examples, which does not "
                       f"split over {jax.device_count()} devices on {self.dp.process_count} "
                       "process(es); use drop_last=True or another batch_size")
    self.steps_per_epoch = (n_train // config.batch_size if self.drop_last
                            else -(-n_train // config.batch_size))
    self.preprocess = getattr(self.dataset, "device_preprocess", None)
    self.ctx = methods.Context(
        self.model, self.modalities, self.hp, subsets.Settings(**config.subsets),
        axis_name=self.axis_name, seed=int(config.seed), mono_modalities=mono_mods,
        num_classes=int(self.dataset.num_classes), steps_per_epoch=int(self.steps_per_epoch),
        feature_dims=(state_lib.feature_dims(self.model, self.dataset.spec, self.modalities,
                                             self.preprocess)
                      if self.method.requires_separable else ()))
    self.window = methods.window(self.hp)
    base = state_lib.base_optimizer(config.optimizer, self.steps_per_epoch, config.num_epochs,
                                    method=config.method, output_layer=OUTPUT_LAYER)
    self.tx = methods.make_tx(self.method, self.ctx, base, config)
    # self.preprocess: the dataset's device-side preprocessing (uint8 frames -> normalised
    # floats), applied first inside every jitted step.
    self.train_step, self.eval_step = self.make_steps(self.method)
    self.labels: dict[str, np.ndarray] = {}   # split -> its labels, flat (set by evaluate)
    self.base_tx = base
    # config.num_seeds > 1: the seeds' states stacked, one step mapped over them
    # (train/seeds.py); the one-seed steps above still serve per-seed work (epoch-end rules,
    # the probe's dep pass).
    self.seeds = seeds_lib.seeds_of(config)
    self.stacked = len(self.seeds) > 1
    if self.stacked:
      (self.train_step_seeds, self.train_step_masked,
       self.eval_step_seeds) = seeds_lib.make_seed_steps(
           self.ctx, self.method, self.tx, preprocess=self.preprocess,
           program=seeds_lib.program(config))

  def make_steps(self, method):
    """``(train_step, eval_step)`` of ``method`` (the run's, or a variant of it) on this run's
    context, optimiser, parallel mode and device preprocessing."""
    return make_steps(self.ctx, method, self.tx, axis_name=self.axis_name,
                      preprocess=self.preprocess)

  def seed_ctx(self, seed: int) -> methods.Context:
    """The step context of one seed (its ``seed``: the optimiser state's noise keys)."""
    return dataclasses.replace(self.ctx, seed=int(seed))

  def init_state(self):
    """The initial state: of ``config.seed``, or the seeds' states stacked (``num_seeds``)."""
    if not self.stacked:
      return self.init_seed(self.config.seed)
    return seeds_lib.stack([self.init_seed(s) for s in self.seeds])

  def init_seed(self, seed: int):
    """Seed ``seed``'s initial state, as a single run of that seed builds it."""
    tx = self.tx if seed == self.config.seed else methods.make_tx(
        self.method, self.seed_ctx(seed), self.base_tx, self.config)
    return state_lib.create(self.model, tx, self.dataset.spec, self.modalities, seed,
                            init=self.config.model.init,
                            embeddings=getattr(self.dataset, "embeddings", None),
                            preprocess=self.preprocess)

  def active(self, epoch: int) -> bool:
    """Whether ``epoch`` is inside the method's modulation window (always, without one)."""
    return self.window is None or self.window.active(epoch)

  def train_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
    return self.dataset.batches("train", batch_size=self.config.batch_size,
                                seed=self.config.seed, epoch=epoch, shuffle=True,
                                drop_remainder=self.drop_last, start_batch=start_batch,
                                shard_index=self.dp.shard_index,
                                shard_count=self.dp.shard_count)

  def evaluate(self, state, split: str, eval_step=None):
    """``(metrics, z, logits)`` over a whole split; the last batch is padded (no retrace).
    ``state`` is the host copy (``run.dp.host_state``); ``eval_step``: the run's by default."""
    outputs, sizes = self._eval_outputs(state, split, eval_step or self.eval_step)
    return self._eval_result(split, outputs, sizes)

  def evaluate_seeds(self, state, split: str) -> list:
    """:meth:`evaluate` of every seed of a stacked state, in one mapped pass per batch."""
    outputs, sizes = self._eval_outputs(state, split, self.eval_step_seeds)
    return [self._eval_result(split, per_seed, sizes)
            for per_seed in seeds_lib.split_outputs(outputs, len(self.seeds))]

  def _eval_outputs(self, state, split: str, eval_step):
    """The eval step's host outputs over ``split`` and each batch's real size."""
    size = self.config.eval_batch_size
    outputs, sizes, labels = [], [], []
    for batch in self.dataset.batches(split, batch_size=size):
      n = len(batch["label"])
      labels.append(np.asarray(batch["label"]))
      if n < size:
        batch = {k: np.concatenate([v, np.repeat(v[:1], size - n, 0)]) for k, v in
                 batch.items()}
      batch["_weight"] = np.arange(size) < n
      batch = self.dp.put_eval_batch(batch)
      weight = batch.pop("_weight")
      outputs.append(eval_step(state, batch, weight))
      sizes.append(n)
    self.labels[split] = np.concatenate(labels).reshape(-1)
    return self.dp.fetch(outputs), sizes

  def _eval_result(self, split: str, outputs, sizes):
    size = self.config.eval_batch_size
    totals = jax.tree.map(lambda *x: float(np.sum(x)), *[o[0] for o in outputs])
    count = totals.pop("count")
    metrics = {k: v / count for k, v in totals.items()}
    # Rows per example: 1, or the positions of a per-position task (labels (B, T)).
    rows = [len(o[2]) // size for o in outputs]
    z = np.concatenate([o[1][:n * r] for o, n, r in zip(outputs, sizes, rows)])
    logits = np.concatenate([o[2][:n * r] for o, n, r in zip(outputs, sizes, rows)])
    return self.whole_split_metrics(metrics, logits, self.labels[split]), z, logits

  def whole_split_metrics(self, metrics: dict, logits, labels) -> dict:
    """``metrics`` (batch sums over counts) with the whole-split ones (``agm_jax.metrics``):
    ``f1``, ``mAP`` (a regression task's float labels: ``acc2``, ``acc2_non0``, ``f1``,
    ``f1_non0``, ``acc7``, ``mae``, ``corr``; ``metrics_lib.whole_split``), and from the subset
    sums ``subset_acc/<subset>`` of every non-empty subset, ``shapley_acc/<m>`` and
    ``imbalance_gap``."""
    metrics = dict(metrics)
    names = metrics_lib.subset_names(self.modalities) if len(self.modalities) > 1 else []
    if names and f"subset_acc/{names[0]}" in metrics:
      subset_acc = [metrics.pop(f"subset_acc/{n}") for n in names]
      metrics.update(metrics_lib.subset_metrics(subset_acc, self.modalities))
    metrics.update(metrics_lib.whole_split(logits, labels))
    return metrics


def _evaluator(run, host, evals):
  """``evaluate(split) -> (metrics, z, logits)`` for a method's ``epoch_end``: this epoch's
  val and test results as computed, any other split evaluated on demand;
  ``evaluate.labels(split)``: the split's labels, in the order of ``z`` and ``logits``."""
  def evaluate(split: str):
    if split not in evals:
      evals[split] = run.evaluate(host, split)
    return evals[split]
  evaluate.labels = lambda split: np.asarray(run.labels[split])
  return evaluate


class _Copies:
  """``methods.base.Copies`` for a method's ``epoch_end`` (``Method.trains_copies``): trains and
  evaluates copies of a state with the method's own step functions, on the run's data and
  optimiser; nothing here touches the run's state. Steps compile once per function."""

  def __init__(self, run):
    self.run, self._train, self._eval = run, {}, {}

  def train(self, state, gradients, epochs: int, *, first_epoch: int,
            fresh_optimizer: bool = False):
    """A copy of host ``state`` trained for ``epochs`` epochs (the run's shuffles of epochs
    ``first_epoch, …``) by ``gradients`` (``Method.gradients``' signature) through the run's
    optimiser: from ``state.opt_state``, or from ``tx.init`` with ``fresh_optimizer``."""
    run = self.run
    if gradients not in self._train:
      method = dataclasses.replace(run.method, gradients=gradients)
      self._train[gradients] = run.make_steps(method)[0]
    step = self._train[gradients]
    state = jax.tree.map(jnp.copy, state)   # the step donates its input: never the run's
    if fresh_optimizer:
      state = state.replace(opt_state=run.tx.init(state.params))
    state = run.dp.put_state(state)
    for epoch in range(first_epoch, first_epoch + epochs):
      for batch in prefetch(run.train_batches(epoch), run.dp.put_batch):
        state, _ = step(state, batch, np.bool_(True))
    return run.dp.host_state(state)

  def evaluate(self, state, evaluate, split: str) -> dict[str, float]:
    """The metrics of host ``state`` over ``split`` by ``evaluate`` (``Method.evaluate``'s
    signature)."""
    run = self.run
    if evaluate not in self._eval:
      method = dataclasses.replace(run.method, evaluate=evaluate)
      self._eval[evaluate] = run.make_steps(method)[1]
    return run.evaluate(state, split, self._eval[evaluate])[0]


  def concept(self, modality: str, seed: int):
    """Modality m's concept's final parameters for this run's settings with ``seed``."""
    config = copy.deepcopy(self.run.config)
    with config.unlocked():
      config.seed = int(seed)
    return competition.concept_params(config, modality, self.run.dataset, fit=fit,
                                      make_run=Run)


def run_finished(state) -> bool:
  """Whether the method has ended the run: a node of the optimiser state with a true
  ``run_finished`` field (MSES once every branch has stopped). It is checkpointed, so a
  resumed run stays ended."""
  has = lambda s: hasattr(s, "run_finished")  # noqa: E731
  return any(bool(np.asarray(s.run_finished)) for s in
             jax.tree.leaves(state.opt_state, is_leaf=has) if has(s))


def _postfix(line: dict) -> dict:
  keys = ["loss", "acc"] + [k for k in line if k.startswith("kappa/")]
  return {k.replace("kappa/", "κ_"): f"{line[k]:.3g}" for k in keys if k in line}


def train_and_evaluate(config, workdir: str, *, dataset=None,
                       epoch_hooks: tuple[Callable, ...] = ()) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` and returns the summary (see :func:`fit`)."""
  return fit(config, workdir, dataset=dataset, epoch_hooks=epoch_hooks)[2]


def fit(config, workdir: str, *, dataset=None, epoch_hooks: tuple[Callable, ...] = ()):
  """:func:`_fit` holding the workdir lock (``agm_jax.train.lock``): a second run on a
  workdir in use stops with ``lock.WorkdirBusy`` before anything is loaded."""
  with lock.hold(workdir):
    return _fit(config, workdir, dataset=dataset, epoch_hooks=epoch_hooks)


def _fit(config, workdir: str, *, dataset=None, epoch_hooks: tuple[Callable, ...] = ()):
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and returns the
  ``(run, final_state, summary)``. ``epoch_hooks`` are called as
  ``hook(run, state, epoch, evals)`` after each epoch's evaluation
  (``evals[split] = (metrics, z, logits)`` for val and test) and return metrics to add to the
  test line; a hook's ``summary`` dict attribute is merged into the summary. With
  ``config.num_seeds > 1`` the seeds train as one jitted program (``train/seeds.py``): every
  hook, epoch-end rule and line is per seed, on that seed's slice of the state."""
  t_start = time.time()
  config = per_method.resolve(config)
  os.makedirs(workdir, exist_ok=True)
  run = Run(config, dataset=dataset)
  seeds, stacked = run.seeds, run.stacked
  n = len(seeds)
  configs = [seeds_lib.seed_config(config, s) for s in seeds] if stacked else [config]
  hooks = [list(epoch_hooks) for _ in seeds]
  if config.competition.enabled and config.method != "unimodal":
    for c, seed_hooks in zip(configs, hooks):
      seed_hooks.insert(0, CompetitionProbe(c, run, fit=fit))
  dirs = [seed_dir(workdir, s) for s in seeds] if stacked else [workdir]
  primary = parallel.is_primary()
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    if stacked:
      for s, d in zip(seeds, dirs):
        seeds_lib.write_seed_config(config, s, d)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  state, restored = ckpt.restore(run.dp.replicate(run.init_state()))
  state = run.dp.put_state(state)
  if restored is not None:
    logging.info("resumed from %s at step %d", ckpt.directory, restored)
    if primary:
      print(f"Resuming from checkpoint at step {restored} in {ckpt.directory}", flush=True)
  writers = [MetricWriter(d, enabled=primary, resume_step=restored or 0,
                          fields={"seed": s} if stacked else None)
             for s, d in zip(seeds, dirs)]
  paper = paper_statistic(config)   # the running maximum the paper reports, per seed
  paper_best = [running_max(d, paper) for d in dirs]

  spe, num_epochs = run.steps_per_epoch, config.num_epochs
  host = run.dp.host_state(state)
  step = int(jax.device_get(host.step).reshape(-1)[0])
  log_every, ckpt_every = config.log_every_steps, config.checkpoint_every_steps
  history: list[list[dict]] = [[] for _ in seeds]
  pbar = tqdm(total=spe * num_epochs, initial=step, desc="train", unit="step",
              disable=not primary, dynamic_ncols=True)
  signals = guard.SignalCheckpoint()
  single = run.dp.process_count == 1
  copier = _Copies(run)
  copies = Copies(copier.train, copier.evaluate, num_epochs, copier.concept)
  flops, counted = None, False
  hosts = seeds_lib.unstack(host, n) if stacked else [host]
  if restored is None and run.method.prepare is not None:   # e.g. UMT's teachers, once
    hosts = [run.method.prepare(run.seed_ctx(s), h, copies=copies) for s, h in zip(seeds, hosts)]
    host = seeds_lib.stack(hosts) if stacked else hosts[0]
    state = run.dp.put_state(host)
    ckpt.save(step, run.dp.checkpoint_state(state))   # a rerun resumes after it
  live = [not run_finished(h) for h in hosts]
  evals: list[dict] = [{} for _ in seeds]

  def preempted():
    pbar.close()
    if primary:
      print(f"{signals.requested or 'a signal to another process'}: saved a checkpoint at "
            f"step {step} in {ckpt.directory}; run the same command to resume", flush=True)
    return guard.Preempted(step)

  def train_step(state, batch, active):
    if not stacked:
      return run.train_step(state, batch, active)
    if all(live):
      return run.train_step_seeds(state, batch, active)
    return run.train_step_masked(state, batch, active, np.asarray(live))

  def check(accs, epoch):
    """Raises NonFiniteError (its line written) if a live seed's accumulated steps have a
    non-finite metric."""
    for i, (a, w) in enumerate(zip(accs, writers)):
      if not live[i]:
        continue
      try:
        a.check(step)
      except guard.NonFiniteError as e:
        w.write(e.step, epoch, "train", e.metrics)
        pbar.close()
        if stacked:
          print(f"seed {seeds[i]}: non-finite metrics; the seeds share one program, so the "
                "run stops", flush=True)
        raise

  def write_lines(accs, epoch):
    """One train line per live seed from its accumulated steps; the first such line."""
    check(accs, epoch)
    first_line = None
    for i, (a, w) in enumerate(zip(accs, writers)):
      if len(a):
        mean = a.pop_mean()   # (an ended seed's frozen steps are not logged)
        if live[i]:
          line = w.write(step, epoch, "train", mean)
          first_line = first_line or line
    return first_line

  with signals, pbar:   # (the bar is closed before any error is printed)
    first = num_epochs if not any(live) else step // spe
    for epoch in range(first, num_epochs):
      active = np.bool_(run.active(epoch))
      accs = [Accumulator(w.pending(step) if epoch == first else ()) for w in writers]
      acc = seeds_lib.StackedAccumulator(accs) if stacked else accs[0]
      stop = False
      for batch in prefetch(run.train_batches(epoch, step % spe), run.dp.put_batch):
        if not counted:   # the compiled step's cost (the call below reuses the compilation)
          step_fn = run.train_step_seeds if stacked else run.train_step
          flops, counted = step_flops(step_fn, state, batch, active), True
        state, metrics = train_step(state, batch, active)
        acc.add(metrics)
        step += 1
        pbar.update(1)
        boundary = step % log_every == 0 or step % spe == 0
        # Every process must stop at the same step: across processes a signal is acted on at
        # the next log line, where the processes agree.
        stop = (signals.requested is not None if single else
                boundary and parallel.any_process(signals.requested is not None))
        end_of_epoch = step % spe == 0   # a stop there waits for the epoch's evaluation
        checkpoint_now = (stop and not end_of_epoch) or (
            ckpt_every and step % ckpt_every == 0 and not end_of_epoch)
        if stacked and (boundary or checkpoint_now):
          acc.flush()
        if boundary:
          line = write_lines(accs, epoch)
          if line is not None:
            pbar.set_postfix(_postfix(line), refresh=False)
        if checkpoint_now:
          check(accs, epoch)
          for i, (a, w) in enumerate(zip(accs, writers)):
            if live[i]:
              w.save_pending(step, a.host_items())   # this line's steps so far
          ckpt.save(step, run.dp.checkpoint_state(state))
        if stop and not end_of_epoch:
          raise preempted()
      host = run.dp.host_state(state)
      if stacked:
        per_seed = {split: run.evaluate_seeds(host, split) for split in ("val", "test")}
        evals = [{split: per_seed[split][i] for split in per_seed} for i in range(n)]
        hosts = seeds_lib.unstack(host, n)
      else:
        evals = [{split: run.evaluate(host, split) for split in ("val", "test")}]
        hosts = [host]
      changed = False
      for i, s in enumerate(seeds):
        if not live[i]:
          continue
        lines = {split: dict(evals[i][split][0]) for split in evals[i]}
        for hook in hooks[i]:
          lines["test"].update(hook(run, hosts[i], epoch, evals[i]))
        if run.method.epoch_end is not None:
          extra = {"copies": copies} if run.method.trains_copies else {}
          hosts[i] = run.method.epoch_end(run.seed_ctx(s), hosts[i], epoch,
                                          _evaluator(run, hosts[i], evals[i]), **extra)
          changed = True
        if paper is not None and lines[paper[0]].get("acc") is not None:
          paper_best[i] = max(paper_best[i], lines[paper[0]]["acc"])
          lines[paper[0]][paper[1]] = paper_best[i]
        for split in ("val", "test"):
          lines[split] = writers[i].write(step, epoch, split, lines[split])
        history[i].append(lines)
        if primary:
          who = f"epoch {epoch}" + (f" seed {s}" if stacked else "")
          pbar.write(f"{who}: val acc {lines['val']['acc']:.4f}  test acc "
                     f"{lines['test']['acc']:.4f}  " + "  ".join(
                         f"{k} {v:.3f}" for k, v in lines["test"].items()
                         if k.startswith("acc/")))
        if run_finished(hosts[i]):
          live[i] = False
          if primary:
            pbar.write(f"{who}: the method ended the run")
      if changed:
        state = run.dp.put_state(seeds_lib.stack(hosts) if stacked else hosts[0])
      ckpt.save(step, run.dp.checkpoint_state(state))
      if not any(live):
        break
      if stop and epoch + 1 < num_epochs:
        raise preempted()
  pbar.close()
  ckpt.close()
  for w in writers:
    w.close()
  wall_s = time.time() - t_start
  host = run.dp.host_state(state)
  # Each seed's own step count (an ended seed's state stopped at its last step).
  seed_steps = [int(h.step) for h in seeds_lib.unstack(host, n)] if stacked else [step]
  summaries = []
  for i in range(n):
    summary = summarize(dirs[i], history[i], wall_s, seed_steps[i], paper)
    summary["train_step_flops"] = flops
    if primary and history[i]:
      save_features(os.path.join(dirs[i], FEATURES_FILE), evals[i]["test"][1],
                    run.labels["test"])
    for hook in hooks[i]:
      summary.update(getattr(hook, "summary", {}))
    summaries.append(summary)
  if stacked:
    for d, summary in zip(dirs, summaries):
      if primary:
        with open(os.path.join(d, "summary.json"), "w") as f:
          json.dump(summary, f, indent=2)
    summary = {"seeds": {str(s): x for s, x in zip(seeds, summaries)}, "num_seeds": n,
               "steps": step, "wall_s": round(wall_s, 2), "train_step_flops": flops}
  else:
    summary = summaries[0]
  if primary:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return run, host, summary


# config.paper_statistic -> (the split whose accuracy it maximises over epochs, its line key).
# The released AGM code reports, per dataset, the best accuracy over all epochs on one split
# (configs/paper.py sets which); agm-jax's headline stays the final and the best-on-val test.
PAPER_STATISTICS = {"": None, "max_test_acc": ("test", "paper_max_test_acc"),
                    "max_val_acc": ("val", "paper_max_val_acc")}


def paper_statistic(config) -> tuple[str, str] | None:
  """``(split, key)`` of ``config.paper_statistic`` (None: off); ValueError names the valid."""
  name = config.get("paper_statistic", "")
  if name not in PAPER_STATISTICS:
    raise ValueError(f"unknown paper_statistic {name!r}; valid: "
                     f"{', '.join(repr(k) for k in PAPER_STATISTICS)}")
  return PAPER_STATISTICS[name]


def eval_lines(workdir: str) -> tuple[dict, dict]:
  """``(test, val)``: the eval lines in ``workdir/metrics.jsonl`` by epoch ({} if none)."""
  tests, vals = {}, {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for raw in f:
        line = json.loads(raw)
        if line["split"] == "test":
          tests[line["epoch"]] = line
        elif line["split"] == "val":
          vals[line["epoch"]] = line
  return tests, vals


def running_max(workdir: str, paper: tuple[str, str] | None) -> float:
  """The largest accuracy of ``paper``'s split among the lines already in ``workdir`` (a
  resumed run's earlier epochs); -inf when there are none."""
  if paper is None:
    return -math.inf
  lines = eval_lines(workdir)[0 if paper[0] == "test" else 1]
  return max((line["acc"] for line in lines.values() if line.get("acc") is not None),
             default=-math.inf)


def summarize(workdir: str, history: list[dict], wall_s: float, step: int,
              paper: tuple[str, str] | None = None) -> dict:
  """Final and best (by validation accuracy) test metrics, and with ``paper`` the paper's
  statistic (``paper``: its value, epoch and split); on resume, the lines logged before the
  restart are read back from metrics.jsonl."""
  tests, vals = eval_lines(workdir)
  for lines in history:
    tests[lines["test"]["epoch"]], vals[lines["val"]["epoch"]] = lines["test"], lines["val"]
  if not tests:
    return {"steps": step, "wall_s": wall_s}
  last = max(tests)
  best = max(vals, key=lambda e: (vals[e].get("acc") or 0.0, -e)) if vals else last
  strip = lambda d: {k: v for k, v in d.items() if k not in ("split",)}  # noqa: E731
  # Selection is on validation only: "best_val" (and its older aliases "best", "best_epoch")
  # is the epoch of best val accuracy, with that epoch's val and test lines.
  summary = {"final": strip(tests[last]), "final_val": strip(vals.get(last, {})),
             "best_val": {"epoch": best, "val": strip(vals.get(best, {})),
                          "test": strip(tests.get(best, {}))},
             "best": strip(tests[best]), "best_epoch": best,
             "steps": step, "wall_s": round(wall_s, 2)}
  if paper is not None:
    split, key = paper
    lines = tests if split == "test" else vals
    scored = {e: line["acc"] for e, line in lines.items() if line.get("acc") is not None}
    if scored:
      epoch = max(scored, key=lambda e: (scored[e], -e))   # the first epoch of the maximum
      summary["paper"] = {"name": key, "value": scored[epoch], "epoch": epoch, "split": split}
  return summary


FEATURES_FILE = "features_test.npz"
FEATURES_MAX_ROWS = 3000


def save_features(path: str, z, labels, max_rows: int = FEATURES_MAX_ROWS) -> bool:
  """Writes the test split's penultimate features ``z`` and flat ``labels`` (for the report's
  t-SNE figure), at most ``max_rows`` rows drawn without replacement (seed 0, in split
  order). False, writing nothing, when their row counts differ."""
  z, labels = np.asarray(z), np.asarray(labels).reshape(-1)
  if z.ndim != 2 or len(z) != len(labels):
    logging.warning("features not saved: z %s and labels %s rows differ", z.shape, labels.shape)
    return False
  rows = np.arange(len(z))
  if len(z) > max_rows:
    rows = np.sort(np.random.default_rng(0).choice(len(z), max_rows, replace=False))
  np.savez_compressed(path, z=z[rows].astype(np.float32), labels=labels[rows])
  return True
