"""Several seeds in one program (``config.num_seeds``): one vmapped train step over a stack of
train states.

``--config.num_seeds=N`` trains seeds ``seed … seed+N−1`` together. Each seed has its own
parameters, optimiser and method state, BatchNorm statistics and RNG (``TrainState`` leaves
with a leading seed axis, initialised exactly as a single run of that seed initialises them);
all seeds read the same batches, in the order of ``seed`` (one shared data order: the seeds
differ in initialisation and in every random draw of the step, not in the data order, so seed
``seed+i`` of a stacked run is not the same run as a separate run with that seed, except for
``i = 0``). The step is ``jax.vmap`` of the ordinary train step (``train/steps.py``), so every
method's step runs unchanged; epoch-end rules (``Method.epoch_end``: MSLR, MSES, G-Blending),
the competition probe and evaluation run per seed on that seed's slice of the state.

A method that ends its run early (MSES: ``run_finished`` in its optimiser state) ends that
seed only: from then on the stacked step keeps the finished seed's state unchanged
(:func:`make_seed_steps`' ``live`` mask) and no more lines are written for it, while the other
seeds go on.

Layout of a run's workdir: ``config.json``, ``checkpoints/`` (the stacked state) and the lock
at the top; ``seed_<s>/`` per seed with its own ``config.json`` (``seed`` = s), ``metrics.jsonl``
(every line with a ``seed`` field), TensorBoard events, ``summary.json`` and test features, so
each seed reads like a separate run (``agm_jax.tools.report`` expands a multi-seed workdir into
its seeds); the top-level ``summary.json`` holds ``seeds: {s: summary}``.
"""

from __future__ import annotations

import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax.train import steps as steps_lib


def count(config) -> int:
  """``config.num_seeds`` validated: a positive integer; more than one needs the sharding
  mode on one process."""
  n = config.get("num_seeds", 1)
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f"num_seeds must be an integer >= 1, got {n!r}")
  if n > 1 and config.parallel.mode != "sharding":
    raise ValueError(f"num_seeds {n} needs parallel.mode 'sharding' (the seeds are vmapped "
                     f"inside one jitted step); got {config.parallel.mode!r}")
  if n > 1 and jax.process_count() > 1:
    raise ValueError(f"num_seeds {n} runs on one process; this run has {jax.process_count()} "
                     "(run one multi-seed job per host, or one seed per job)")
  return int(n)


def seeds_of(config) -> tuple[int, ...]:
  """The seeds a run trains: ``seed, seed+1, …, seed+num_seeds−1``."""
  return tuple(int(config.seed) + i for i in range(count(config)))


def seed_config(config, seed: int):
  """The config of one seed of a stacked run, as that seed's own run records it: ``seed`` set,
  ``num_seeds`` 1."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.seed = int(seed)
    c.num_seeds = 1
  return c


def stack(states):
  """One state with a leading seed axis from per-seed states."""
  return jax.tree.map(lambda *x: jnp.stack(x), *states)


def take(state, i: int):
  """Seed ``i``'s slice of a stacked state."""
  return jax.tree.map(lambda x: x[i], state)


def unstack(state, n: int) -> list:
  return [take(state, i) for i in range(n)]


def keep_finished(new, old, live):
  """``new`` for the live seeds, ``old`` for those whose run has ended (``live`` False)."""
  def pick(n, o):
    mask = live.reshape((-1,) + (1,) * (n.ndim - 1))
    return jnp.where(mask, n, o)
  return jax.tree.map(pick, new, old)


def make_seed_steps(ctx, method, tx, *, preprocess=None):
  """``(train, train_masked, evaluate)``: the run's train and eval steps vmapped over the
  leading seed axis of the state (the batch, ``active`` and the eval weight shared).
  ``train(state, batch, active)``; ``train_masked(state, batch, active, live)`` keeps the
  seeds with ``live[i]`` False unchanged (an ended run); the state is donated."""
  kwargs = {} if preprocess is None else {"preprocess": preprocess}

  def one(s, b, a):
    return steps_lib.train_step(s, b, a, ctx=ctx, method=method, tx=tx, **kwargs)

  stepped = jax.vmap(one, in_axes=(0, None, None))

  def masked(s, b, a, live):
    new, metrics = stepped(s, b, a)
    return keep_finished(new, s, live), metrics

  train = jax.jit(stepped, donate_argnums=0)
  train_masked = jax.jit(masked, donate_argnums=0)
  evaluate = jax.jit(jax.vmap(
      lambda s, b, w: steps_lib.eval_step(s, b, w, ctx=ctx, method=method, **kwargs),
      in_axes=(0, None, None)))
  return train, train_masked, evaluate


def split_outputs(outputs: list, n: int) -> list[list]:
  """Host eval outputs of a vmapped eval step (leading seed axis on every leaf) as ``n``
  per-seed lists."""
  return [[jax.tree.map(lambda x, i=i: x[i], o) for o in outputs] for i in range(n)]


class StackedAccumulator:
  """The step metrics of a stacked run (each a ``(num_seeds,)`` device array) kept on the
  device until a line is due, then split into one host ``Accumulator`` per seed
  (``per_seed``, built by ``make``)."""

  def __init__(self, per_seed: list):
    self.per_seed = per_seed
    self._device: list[dict] = []

  def add(self, metrics: dict) -> None:
    self._device.append(metrics)

  def flush(self) -> None:
    if self._device:
      for m in jax.device_get(self._device):
        for i, acc in enumerate(self.per_seed):
          acc.add({k: float(v[i]) for k, v in m.items()})
      self._device = []


def write_seed_config(config, seed: int, path: str) -> None:
  """``path/config.json`` of one seed: the run's config with ``seed`` = s, ``num_seeds`` 1,
  and ``seed_group``: the stacked run's seeds."""
  c = json.loads(seed_config(config, seed).to_json_best_effort())
  c["seed_group"] = list(seeds_of(config))
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(c, f, indent=2)
