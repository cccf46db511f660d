"""Several seeds in one program (``config.num_seeds``): one jitted train step over a stack of
train states, the ordinary step vmapped or unrolled over the seeds.

``--config.num_seeds=N`` trains seeds ``seed … seed+N−1`` together. Each seed has its own
parameters, optimiser and method state, BatchNorm statistics and RNG (``TrainState`` leaves
with a leading seed axis, initialised exactly as a single run of that seed initialises them);
all seeds read the same batches, in the order of ``seed`` (one shared data order: the seeds
differ in initialisation and in every random draw of the step, not in the data order, so seed
``seed+i`` of a stacked run is not the same run as a separate run with that seed, except for
``i = 0``). The step maps the ordinary train step (``train/steps.py``) over the seed axis, so
every method's step runs unchanged: ``jax.vmap`` (one batched op per op of the step) or
unrolled (the step traced once per seed into the same program), ``config.seed_program``;
``auto``, the default, unrolls on the CPU when the step convolves (XLA:CPU runs the grouped
convolutions of a vmapped one slowly) and vmaps otherwise (:func:`auto_program`). Epoch-end
rules (``Method.epoch_end``: MSLR, MSES, G-Blending), the competition probe and evaluation
run per seed on that seed's slice of the state.

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
from jax.extend import core as jax_core

from agm_jax.train import steps as steps_lib


def count(config) -> int:
  """``config.num_seeds`` validated: a positive integer; more than one needs the sharding
  mode on one process."""
  n = config.get("num_seeds", 1)
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f"num_seeds must be an integer >= 1, got {n!r}")
  if n > 1 and config.parallel.mode != "sharding":
    raise ValueError(f"num_seeds {n} needs parallel.mode 'sharding' (the seeds are mapped "
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


PROGRAMS = ("auto", "vmap", "unroll")


def _checked(name, what: str) -> str:
  if name not in PROGRAMS:
    raise ValueError(f"{what} must be one of {', '.join(PROGRAMS)}; got {name!r}")
  return name


def program(config) -> str:
  """``config.seed_program`` validated: ``vmap`` (one batched program: each per-seed op
  becomes one op over the seeds), ``unroll`` (the step traced once per seed into the same
  jitted program: N copies of the ordinary step's ops) or ``auto`` (:func:`over_seeds`
  chooses when it traces the step)."""
  return _checked(config.get("seed_program", "auto"), "seed_program")


def _jaxprs(value):
  """The jaxprs held in an equation parameter (a jaxpr, a closed one, or a tuple of them)."""
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _jaxprs(v)


def convolutions(jaxpr):
  """The convolution equations of ``jaxpr`` and of every jaxpr nested in its equations."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield eqn
    for v in eqn.params.values():
      for j in _jaxprs(v):
        yield from convolutions(j)


def has_convolution(jaxpr) -> bool:
  """Whether ``jaxpr`` (or any jaxpr nested in its equations) convolves."""
  return next(convolutions(jaxpr), None) is not None


def auto_program(fn, args, in_axes) -> str:
  """``auto``'s choice for ``fn`` on ``args`` (the mapped ones with their seed axis): ``unroll``
  on the CPU when one seed's ``fn`` convolves, ``vmap`` otherwise. Under vmap a convolution
  with per-seed kernels becomes a grouped convolution, which XLA:CPU runs far slower than
  separate ones (CREMA-D ResNet-18, batch 16, 2 seeds: AGM 2.71× one seed's step vmapped,
  1.96× unrolled); without convolutions the batched ops win (the default MLP, batch 64, 4
  seeds: joint 1.74× vmapped, 1.92× unrolled; AGM 1.84× and 2.14×). Unrolling costs about N×
  one seed's compile and can gain nothing (AV-MNIST ResNet-18, 28×28, batch 64, 2 seeds: AGM
  2.01× vmapped, 2.02× unrolled; first step 27 s and 49 s); it is kept for convolutions because
  it never ran slower than vmap there, and the compile is paid once."""
  if jax.default_backend() != "cpu":
    return "vmap"
  one = [jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), a) if ax == 0
         else a for a, ax in zip(args, in_axes)]
  return "unroll" if has_convolution(jax.make_jaxpr(fn)(*one).jaxpr) else "vmap"


def over_seeds(fn, in_axes, program: str = "vmap"):
  """``fn`` mapped over the leading seed axis of the arguments whose ``in_axes`` entry is 0
  (the others, ``None``, shared), outputs stacked on a leading seed axis: ``jax.vmap``, or for
  ``program="unroll"`` one call of ``fn`` per seed (the seed count read from the first mapped
  argument's shape when traced), in order: an optimisation barrier holds seed i's inputs until
  seed i−1's outputs exist, so XLA does not interleave the copies (CREMA-D ResNet-18 AGM,
  batch 16, 2 seeds on the CPU: 1.96× one seed's step in order, 2.11× interleaved), or for
  ``"auto"`` the one :func:`auto_program` picks when traced. All give the same values up to
  float rounding (batched and separate ops round differently; over a 20-epoch run of the
  default config that moved one seed's final test accuracy by one example in 1,200)."""
  _checked(program, "program")
  mapped = [i for i, a in enumerate(in_axes) if a == 0]
  vmapped = jax.vmap(fn, in_axes=in_axes)

  def unrolled(*args):
    n = jax.tree.leaves(args[mapped[0]])[0].shape[0]
    outs = []
    for i in range(n):
      one = [take(a, i) if ax == 0 else a for a, ax in zip(args, in_axes)]
      if outs:   # seed i starts once seed i−1 is done: one seed's working set live at a time
        outs[-1], one = jax.lax.optimization_barrier((outs[-1], one))
      outs.append(fn(*one))
    return stack(outs)

  def chosen(*args):
    return (unrolled if auto_program(fn, args, in_axes) == "unroll" else vmapped)(*args)

  return {"vmap": vmapped, "unroll": unrolled, "auto": chosen}[program]


def make_seed_steps(ctx, method, tx, *, preprocess=None, program: str = "auto"):
  """``(train, train_masked, evaluate)``: the run's train and eval steps mapped over the
  leading seed axis of the state (the batch, ``active`` and the eval weight shared) by
  :func:`over_seeds` with ``program``. ``train(state, batch, active)``;
  ``train_masked(state, batch, active, live)`` keeps the seeds with ``live[i]`` False
  unchanged (an ended run); the state is donated."""
  kwargs = {} if preprocess is None else {"preprocess": preprocess}

  def one(s, b, a):
    return steps_lib.train_step(s, b, a, ctx=ctx, method=method, tx=tx, **kwargs)

  stepped = over_seeds(one, (0, None, None), program)

  def masked(s, b, a, live):
    new, metrics = stepped(s, b, a)
    return keep_finished(new, s, live), metrics

  train = jax.jit(stepped, donate_argnums=0)
  train_masked = jax.jit(masked, donate_argnums=0)
  evaluate = jax.jit(over_seeds(
      lambda s, b, w: steps_lib.eval_step(s, b, w, ctx=ctx, method=method, **kwargs),
      (0, None, None), program))
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
