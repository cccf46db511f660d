"""Neuron dropout on the fused features: the T-PAMI 2024 OGM/OPM paper's neuron-dropout
baselines (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal Learning",
Sec. 4.3.4, Table 6: Dropout, Annealed, Evolutional and Curriculum dropout, on Concatenation
fusion).

The method, not the model, drops: in the training forward pass the encoders' features (the
concatenation the late head's classifier reads, each modality's block of it) go through
dropout before the fusion head; evaluation never drops. ``feature_dropout.schedule`` picks
the rate's schedule, each a pure function of the step in ``transforms/dropout_schedules.py``
(formulas and papers there):

* ``"constant"`` (Dropout): rate ``p``;
* ``"annealed"``: ``p * max(0, 1 - step / anneal_steps)``;
* ``"curriculum"``: ``p * (1 - exp(-gamma * step))`` (retain probability from 1 to ``1 - p``);
* ``"evolutional"``: per-feature sampling probabilities from the mini-batch's second-order
  statistics over the concatenated features (per device under ``pmap``), ``round((1 - p) * d)``
  draws per example.

The T-PAMI paper gives none of these settings; the defaults (``p`` 0.5, ``anneal_steps``
2000, ``gamma`` 1e-3) are ours. ``step`` is the count of optimiser updates so far, kept by
``dropout_schedules.with_drop_state``, which also logs ``drop_rate/<m>``: the step's
scheduled rate (the same for every modality; evolutional: its nominal ``p``). Needs a
late-fusion head (``branches.late_step``). Under ``pmap`` the masks fold in the device index
(``subsets.device_key``): each device's examples draw their own.
Config section ``feature_dropout``: ``schedule``, ``p``, ``anneal_steps``, ``gamma``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import subsets
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, check_late_fusion, find_state, from_section
from agm_jax.transforms import dropout_schedules as ds


@dataclasses.dataclass(frozen=True)
class HParams:
  schedule: str        # "constant" | "annealed" | "curriculum" | "evolutional"
  p: float             # the (final) drop rate
  anneal_steps: int    # annealed: updates over which the rate falls from p to 0
  gamma: float         # curriculum: the retain probability's decay per update

  def __post_init__(self):
    if self.schedule not in ds.SCHEDULES:
      raise ValueError(f"schedule {self.schedule!r} is unknown; valid: {list(ds.SCHEDULES)}")
    if not 0.0 <= self.p < 1.0:
      raise ValueError(f"p must be in [0, 1), got {self.p}")
    if self.anneal_steps < 1:
      raise ValueError(f"anneal_steps must be >= 1, got {self.anneal_steps}")
    if self.gamma < 0:
      raise ValueError(f"gamma must be >= 0, got {self.gamma}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "feature_dropout")
  return ds.with_drop_state(base, num_modalities=ctx.k, axis_name=ctx.axis_name)


def scheduled_rate(hp: HParams, step) -> jax.Array:
  """The schedule's drop rate at ``step`` (evolutional: its nominal ``p``)."""
  return ds.drop_rate(hp.schedule, step, p=hp.p, anneal_steps=hp.anneal_steps, gamma=hp.gamma)


def drop_features(feats, hp: HParams, step, key, axis_name: str | None = None):
  """``feats`` after the schedule's dropout on their concatenation, split back. Under
  ``pmap`` (``axis_name``) each device draws its own masks (``subsets.device_key``)."""
  key = subsets.device_key(key, axis_name)
  dims = [f.shape[-1] for f in feats]
  ends = np.cumsum(dims)
  z = jnp.concatenate(tuple(feats), axis=-1)
  if hp.schedule == "evolutional":
    draws = max(1, round((1.0 - hp.p) * z.shape[-1]))
    dropped = z * ds.evolutional_mask(z, key, draws=draws).astype(z.dtype)
  else:
    dropped = ds.bernoulli_dropout(z, scheduled_rate(hp, step), key)
  return tuple(dropped[:, e - d:e] for d, e in zip(dims, ends))


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active
  drop_key, pad_key = jax.random.split(rng)
  step = find_state(opt_state, ds.DropState).count

  def feature_fn(feats, unimodal):
    del unimodal
    return drop_features(feats, ctx.hp, step, drop_key, ctx.axis_name), None

  out = branches.late_step(ctx, params, batch_stats, batch, pad_key, feature_fn=feature_fn)
  rate = jnp.full((ctx.k,), scheduled_rate(ctx.hp, step), jnp.float32)
  return StepOutput(out.grads, {"drop_rate": rate}, out.batch_stats, out.metrics)


METHOD = Method(name="feature_dropout", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("drop_rate",))
