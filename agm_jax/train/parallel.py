"""Data parallelism on JAX's own runtime: a sharded ``jit`` over a device mesh (default) or a
``pmap`` step with an axis name, on one process or several (``jax.distributed``).

* ``sharding``: the global batch is split on the mesh's ``data`` axis and the state is
  replicated; the step is written over the global batch, so BatchNorm statistics, the
  mono-modal cross-entropies and kappa are global-batch values (XLA inserts the reductions).
* ``pmap``: each device runs the step on its slice; gradients and metrics are ``pmean``-ed over
  ``AXIS``, BatchNorm is synchronised over it (the model is built with ``bn_axis_name``) and the
  ``agm`` transform averages ``mono_ce`` over it, so kappa is the same on every device.

Across processes (:func:`initialize`) each process loads ``batch_size / process_count`` examples
of every global batch: its own rows. In ``sharding`` mode evaluation is split the same way and
gathered; in ``pmap`` mode every process evaluates the whole split on one local device.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MODES = ("sharding", "pmap")
AXIS = "batch"   # the pmap axis name (BatchNorm, pmean of gradients, agm's mono_ce)
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedError(RuntimeError):
  """A multi-process run could not be joined (bad settings, unreachable coordinator)."""


def axis_name(config) -> str | None:
  """The collective axis a step is mapped over, or None (sharding mode needs none)."""
  return AXIS if config.parallel.mode == "pmap" else None


def _int_or_none(name: str, value) -> int | None:
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               timeout_s: int = 300) -> bool:
  """Joins a multi-process run through ``jax.distributed.initialize`` when one is asked for:
  by the arguments, else by the environment (``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), or with ``auto`` by JAX's cluster detection
  (SLURM, Open MPI, Kubernetes, TPU pods). Must run before anything touches a device. On CPU
  the cross-process collectives are gloo's. Returns whether a multi-process run was joined."""
  coordinator_address = coordinator_address or os.environ.get(ENV[0]) or None
  num_processes = _int_or_none("num_processes", num_processes if num_processes is not None
                               else os.environ.get(ENV[1]))
  process_id = _int_or_none("process_id", process_id if process_id is not None
                            else os.environ.get(ENV[2]))
  if not auto and coordinator_address is None and num_processes in (None, 1) and not process_id:
    return False
  if not auto:
    missing = [n for n, v in zip(("coordinator_address", "num_processes", "process_id"),
                                 (coordinator_address, num_processes, process_id)) if v is None]
    if missing:
      raise ValueError(f"a multi-process run needs coordinator_address, num_processes and "
                       f"process_id (flags or {', '.join(ENV)}); missing {', '.join(missing)} "
                       "(or pass --distributed to detect them from the cluster)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"process_id must be in [0, num_processes): got process_id "
                       f"{process_id}, num_processes {num_processes}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU arrays' collectives
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except (RuntimeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(f"could not join the multi-process run (coordinator "
                           f"{coordinator_address or 'auto-detected'}, process {process_id} "
                           f"of {num_processes}): {first}") from e
  return True


def is_primary() -> bool:
  """Whether this process writes files (metrics, summary, caches): process 0."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (nothing to wait for on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def primary_first(fn, name: str):
  """``fn()`` on process 0, then on the others (e.g. preparing a dataset once, then reading
  it everywhere)."""
  if is_primary():
    result = fn()
    barrier(name)
    return result
  barrier(name)
  return fn()


def primary_flag(flag: bool) -> bool:
  """Process 0's ``flag`` on every process (e.g. whether process 0 found a cache)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.array(bool(flag))))


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is set on any process (every process gets the same answer)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.array(bool(flag)))))


class DataParallel:
  """Places batches and state on the devices for one of ``MODES``."""

  def __init__(self, mode: str, batch_size: int, eval_batch_size: int):
    if mode not in MODES:
      raise ValueError(f"unknown parallel.mode {mode!r}; valid: {', '.join(MODES)}")
    self.mode = mode
    self.devices = jax.devices()
    self.local_devices = jax.local_devices()
    self.process_count = jax.process_count()
    n = len(self.devices)
    if len(self.local_devices) * self.process_count != n:
      raise ValueError(f"the {self.process_count} processes hold different numbers of devices "
                       f"({len(self.local_devices)} here, {n} in all); give each the same")
    for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
      if size % n:
        raise ValueError(f"{name} {size} is not divisible by the {n} devices "
                         f"({self.process_count} process(es)); use a multiple of {n}")
    self.num_devices = n
    self.mesh = Mesh(np.array(self.devices), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    self.local_sharding = NamedSharding(Mesh(np.array(self.local_devices), ("data",)), P("data"))

  @property
  def shard_index(self) -> int:
    return jax.process_index()

  @property
  def shard_count(self) -> int:
    return self.process_count

  def put_batch(self, batch: dict) -> dict:
    """This process's part of a global batch -> device arrays (sharded, or pmap-stacked over
    the local devices)."""
    if self.mode == "pmap":   # (local devices, per-device batch, …)
      n = len(self.local_devices)
      return jax.device_put(jax.tree.map(lambda x: np.reshape(x, (n, -1, *x.shape[1:])), batch),
                            self.local_sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
        batch)

  def put_eval_batch(self, batch: dict) -> dict:
    """A whole (padded) eval batch, the same on every process -> the eval step's input."""
    if self.mode == "pmap":   # evaluation runs the jit step on the unreplicated local state
      return jax.device_put(batch)
    rows = len(next(iter(batch.values()))) // self.process_count
    lo = self.shard_index * rows
    return self.put_batch({k: v[lo:lo + rows] for k, v in batch.items()})

  def fetch(self, tree):
    """Host numpy values of step outputs; arrays split across processes are gathered."""
    if self.process_count == 1 or self.mode == "pmap":
      return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)

  def replicate(self, state):
    """The state as arrays replicated on every device of every process (sharding mode's
    layout, and what checkpoints are written from and restored into)."""
    def put(x):   # (the exact sharding, else the step would compile again)
      if isinstance(x, jax.Array) and x.sharding == self.replicated:
        return x
      if self.process_count > 1:   # through the host: every process holds the same value
        x = np.asarray(x)
      return jax.device_put(x, self.replicated)
    return jax.tree.map(put, state)

  def put_state(self, state):
    if self.mode == "pmap":   # one copy per local device on a leading axis
      n = len(self.local_devices)
      stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state)
      return jax.device_put(stacked, self.local_sharding)
    return self.replicate(state)

  def host_state(self, state):
    """One copy of the state (for evaluation and the methods' epoch-end updates)."""
    if self.mode == "pmap":
      return jax.tree.map(first_local_copy, state)
    return state

  def checkpoint_state(self, state):
    """The state as orbax writes it on every process: replicated global arrays."""
    return self.replicate(self.host_state(state))


def first_local_copy(x):
  """Row 0 of a pmap-stacked array, as an array on the one device that holds it.

  ``x[0]`` is a program over every local device (the row is gathered with a collective), one
  per leaf, launched without waiting. In a multi-process CPU run (gloo collectives, 2 processes
  x 2 devices, pmap) one process hung in such a gather at the final checkpoint while the other
  had gone on to the next cross-process program: seen in 1 of 5 runs with the CPU loaded, the
  cause of a CI timeout. Taking the shard runs no collective and moves nothing."""
  if not isinstance(x, jax.Array):
    return x[0]
  for shard in x.addressable_shards:   # (a stacked array has a leading axis: index[0] exists)
    if (shard.index[0].start or 0) == 0:
      return shard.data.reshape(x.shape[1:])
  raise ValueError(f"no local device holds row 0 of this {x.shape} array")
