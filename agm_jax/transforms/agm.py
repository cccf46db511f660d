"""Gradient modulation as optax transformations, and their pure coefficient functions.

AGM (Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation",
ICCV 2023), Algorithm 1 with the sign convention of the released code (``ce`` is a loss:
lower = stronger modality). At global step ``t = 1, 2, …`` with running means ``r̂ce``
(0 before the first step)::

    r^m     = exp( (mean_j ce^j  - ce^m)  * k/(k-1) )
    tau^m   = exp( (mean_j r̂ce^j - r̂ce^m) * k/(k-1) )     # reference="one": tau^m = 1
    kappa^m = exp( alpha * min(tau^m - r^m, clip) )
    r̂ce^m  <- r̂ce^m * (t-1)/t + ce^m / t                  # after kappa is computed

The running mean is eq. 10's and the released mains' (``train_score``); Algorithm 1's line 10
writes ``r̂ce * t/(t+1) + ce/(t+1)``, which would count the initial 0 as a first value (after
step 1 r̂ce = ce/2, not ce), and is not followed. ``ce^m`` may floor the label probability
(``shapley.mono_modal_ce(..., p_floor=)``, the released mains' 1e-8), before it reaches here.

and the update (eq. 6) is ``g = sum_m kappa^m g^m`` with ``g^m`` modality m's share of the
gradient (``agm_jax.shapley``). The transform takes either the stacked per-modality
gradients (leading axis k) or a linear function ``kappa -> sum_m kappa^m g^m`` (the
single-backward form, ``shapley.shapley_vjp``'s ``backward``)::

    tx = optax.chain(agm(alpha=1.0, num_modalities=2), optax.sgd(1e-3, momentum=0.9))
    updates, opt_state = tx.update(per_modality_grads, opt_state, params, mono_ce=ce)

"AGM-GE" chains OGM-GE's generalisation enhancement after ``agm`` (``transforms.ge``).

Composition (docs/COMPOSING.md). The modulated step is one mini-batch: ``agm`` computes kappa
from that mini-batch's ``mono_ce`` and advances its running mean once per ``update`` call (a
mini-batch whose ``mono_ce`` is not finite leaves the running mean and count unchanged). So
``agm`` goes FIRST in the chain, over the whole parameter tree; its output is an ordinary
parameter-shaped gradient, and everything after it is plain optax. Wrappers wrap the base
optimiser after it, never ``agm`` itself::

    optax.chain(agm(...), optax.MultiSteps(optax.sgd(...), every_k_schedule=4))
    optax.chain(agm(...), optax.apply_if_finite(optax.sgd(...), max_consecutive_errors=3))
    optax.chain(agm(...), optax.multi_transform({"encoders": adam, "head": sgd}, labels))
    optax.inject_hyperparams(agm, static_args="num_modalities")(alpha=schedule, ...)

A wrapper placed around ``agm`` (``MultiSteps``, ``apply_if_finite``) raises a ``ValueError``
at trace time naming this pattern (``common.check_per_modality``). ``update`` needs
``mono_ce=``: flax's ``TrainState.apply_gradients`` does not forward it
(``agm_jax.compat.ModulatedTrainState`` does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.shapley import check_num_modalities
from agm_jax.transforms.common import (
  batch_statistic,
  check_extra_args,
  check_per_modality,
  check_value,
  combine,
  require_extra_arg,
  running_mean,
)

REFERENCES = ("running_mean", "one")
OUTSIDE = ("one", "hold")
EXPECTS = "per-modality gradients (leading axis k={k}) or a linear function kappa -> grads"


def _centred_exp(x: jax.Array) -> jax.Array:
  """``exp((mean_j x^j - x^m) * k/(k-1))`` over the last axis."""
  k = x.shape[-1]
  return jnp.exp((x.mean(-1, keepdims=True) - x) * (k / (k - 1)))


def agm_coefficients(mono_ce: jax.Array, running_ce: jax.Array, *, alpha: float,
                     clip: float, reference: str = "running_mean") -> jax.Array:
  """AGM's ``kappa`` of shape ``(k,)`` from this step's and the running mono-modal CE.

  For k = 2 this is the released code's
  ``kappa_a = exp(alpha * min(exp(rce_v - rce_a) - exp(ce_v - ce_a), clip))``.
  """
  mono_ce = jnp.asarray(mono_ce, jnp.float32)
  r = _centred_exp(mono_ce)
  if reference == "running_mean":
    tau = _centred_exp(jnp.asarray(running_ce, jnp.float32))
  elif reference == "one":
    tau = jnp.ones_like(r)
  else:
    raise ValueError(f"unknown AGM reference {reference!r}; valid: {list(REFERENCES)}")
  return jnp.exp(alpha * jnp.minimum(tau - r, clip))


class AGMState(NamedTuple):
  """AGM's state: checkpoint it with the optimiser (the running mean spans the whole run)."""
  running_ce: jax.Array  # (k,) cumulative mean of the mono-modal cross-entropies
  count: jax.Array       # int32 (): steps seen (with finite mono_ce), t
  kappa: jax.Array       # (k,) the coefficients of the last finite update (held, logged)


def outside_kappa(kappa: jax.Array, previous: jax.Array, active, outside: str) -> jax.Array:
  """The coefficients a step applies: ``kappa`` inside the modulation window; outside it 1
  (``outside="one"``) or the last coefficients applied (``"hold"``: the released code's
  backward hooks keep the scale last set, so after the window the last kappa stays; before
  the window ``previous`` is still the initial 1)."""
  if outside == "one":
    return jnp.where(active, kappa, jnp.ones_like(kappa))
  if outside == "hold":
    return jnp.where(active, kappa, previous)
  raise ValueError(f"outside {outside!r} is unknown; valid: {', '.join(OUTSIDE)}")


def agm(alpha: float, clip: float = 10.0, *, num_modalities: int,
        reference: str = "running_mean", outside: str = "one",
        axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """Adaptive Gradient Modulation (ICCV 2023) as an optax gradient transformation.

  ``update(per_modality_grads, state, params=None, *, mono_ce, active=True)`` returns
  ``(sum_m kappa^m g^m, new_state)``. ``kappa`` uses the running mean *before* this step's
  update; ``active=False`` (outside the modulation window) applies 1 (``outside="one"``) or
  the last kappa applied (``outside="hold"``, the released code) while the running mean
  still updates. A step whose ``mono_ce`` is not finite leaves the running mean and the
  count unchanged (its kappa is not finite: a guard such as ``optax.apply_if_finite`` after
  ``agm`` rejects that update, and the step leaves no trace). With ``axis_name`` (inside
  ``pmap``/``shard_map``) ``mono_ce`` is ``pmean``-ed first so every device uses the global
  batch's kappa; the gradients are not averaged here (do that in the trainer, as for any
  optimiser).

  ``alpha`` and ``clip`` may be schedules through ``optax.inject_hyperparams`` (pass
  ``static_args="num_modalities"``); traced values are not validated.

  Args:
    alpha: modulation strength, >= 0 (0 = plain joint training).
    clip: upper bound of ``tau - r`` in the exponent, > 0 (released code: 10 for CREMA-D, 7
      for UR-Funny; ``float("inf")``: no bound, as its AV-MNIST, AVE and MOSEI runs).
    num_modalities: k >= 2.
    reference: "running_mean" (AGM) or "one" (the AGM(1) ablation, Table 8).
    outside: kappa outside the window: "one" or "hold" (see above).
    axis_name: a mapped axis to average ``mono_ce`` over.
  """
  k = check_num_modalities(num_modalities)
  check_value("alpha", alpha, lambda a: a >= 0, "must be >= 0")
  check_value("clip", clip, lambda c: c > 0, "must be > 0")
  if reference not in REFERENCES:
    raise ValueError(f"reference {reference!r} is unknown; valid: {list(REFERENCES)}")
  if outside not in OUTSIDE:
    raise ValueError(f"outside {outside!r} is unknown; valid: {', '.join(OUTSIDE)}")

  def init_fn(params):
    del params
    return AGMState(jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.int32),
                    jnp.ones((k,), jnp.float32))

  def update_fn(updates, state, params=None, *, mono_ce=None, active=True, **extra_args):
    check_extra_args(extra_args, "agm")
    check_per_modality(updates, params, k, "agm", EXPECTS.format(k=k))
    require_extra_arg(mono_ce, "mono_ce", "agm", "the (k,) mono-modal cross-entropies")
    del params
    mono_ce = batch_statistic(mono_ce, k, "mono_ce", axis_name)
    kappa = agm_coefficients(mono_ce, state.running_ce, alpha=alpha, clip=clip,
                             reference=reference)
    kappa = outside_kappa(kappa, state.kappa, active, outside)
    count = state.count + 1
    finite = jnp.isfinite(mono_ce).all()
    new_state = AGMState(jnp.where(finite, running_mean(state.running_ce, mono_ce, count),
                                   state.running_ce),
                         jnp.where(finite, count, state.count),
                         jnp.where(finite, kappa, state.kappa))
    return combine(updates, kappa), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
