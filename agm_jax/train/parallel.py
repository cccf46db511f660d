"""Data parallelism on JAX's own runtime: a sharded ``jit`` over a device mesh (default) or a
``pmap`` step with an axis name. Works across hosts after ``jax.distributed.initialize``: each
process feeds its own shard of the global batch.

* ``sharding``: the global batch is split on the mesh's ``data`` axis and the state is
  replicated; the step is written over the global batch, so BatchNorm statistics, the
  mono-modal cross-entropies and kappa are global-batch values (XLA inserts the reductions).
* ``pmap``: each device runs the step on its slice; gradients and metrics are ``pmean``-ed over
  ``AXIS``, BatchNorm is synchronised over it (the model is built with ``bn_axis_name``) and the
  ``agm`` transform averages ``mono_ce`` over it, so kappa is the same on every device.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MODES = ("sharding", "pmap")
AXIS = "batch"   # the pmap axis name (BatchNorm, pmean of gradients, agm's mono_ce)


def axis_name(config) -> str | None:
  """The collective axis a step is mapped over, or None (sharding mode needs none)."""
  return AXIS if config.get("parallel", {}).get("mode", "sharding") == "pmap" else None


class DataParallel:
  """Places batches and state on the devices for one of ``MODES``."""

  def __init__(self, mode: str, batch_size: int, eval_batch_size: int):
    if mode not in MODES:
      raise ValueError(f"unknown parallel.mode {mode!r}; valid: {', '.join(MODES)}")
    self.mode = mode
    self.devices = jax.devices()
    n = len(self.devices)
    for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
      if size % n:
        raise ValueError(f"{name} {size} is not divisible by the {n} devices "
                         f"({jax.process_count()} process(es)); use a multiple of {n}")
    self.num_devices = n
    self.mesh = Mesh(np.array(self.devices), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())

  @property
  def shard_index(self) -> int:
    return jax.process_index()

  @property
  def shard_count(self) -> int:
    return jax.process_count()

  def put_batch(self, batch: dict) -> dict:
    """This process's part of a global batch -> device arrays (sharded, or pmap-stacked)."""
    if self.mode == "pmap":   # (devices, per-device batch, …), one slice per device
      n = self.num_devices
      return jax.device_put(jax.tree.map(lambda x: np.reshape(x, (n, -1, *x.shape[1:])), batch),
                            self.batch_sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
        batch)

  def put_eval_batch(self, batch: dict) -> dict:
    if self.mode == "pmap":   # evaluation runs the jit step on the unreplicated state
      return jax.device_put(batch)
    return self.put_batch(batch)

  def put_state(self, state):
    if self.mode == "pmap":   # one copy per device on a leading axis
      n = self.num_devices
      stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), state)
      return jax.device_put(stacked, self.batch_sharding)
    return jax.device_put(state, self.replicated)

  def host_state(self, state):
    """One copy of the state (for checkpoints and evaluation)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], state)
    return state
