"""Greedy's re-balancing schedule (Wu, Jastrzębski, Cho, Geras, "Characterizing and Overcoming
the Greedy Nature of Learning in Multi-modal Deep Neural Networks", ICML 2022) as an optax
transformation, and the conditional utilisation rate it reads.

``u^m = (A(M) - A(M \\ {m})) / A(M)`` (A: accuracy) is computed from the subset logits of the
training batch (:func:`utilisation_rates`); the transform keeps an exponential moving average
``ū`` and, when not already re-balancing and ``max_m ū^m - min_m ū^m > threshold``, marks the
next ``window`` steps as re-balancing steps for the least-utilised modality (``caring``,
read by the next step's forward pass: ``agm_jax.methods.greedy``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.shapley import check_num_modalities
from agm_jax.transforms.common import check_extra_args, check_value, require_extra_arg


def utilisation_rates(v: jax.Array, labels: jax.Array) -> jax.Array:
  """``u^m = (A(M) - A(M \\ {m})) / A(M)`` from subset logits ``V`` ``(2**k, B, K)``."""
  k = int(round(math.log2(v.shape[0])))
  full = 2**k - 1
  correct = jnp.argmax(v, -1) == labels[None]
  acc = correct.mean(-1).astype(jnp.float32)
  without = acc[jnp.asarray([full ^ (1 << m) for m in range(k)])]
  return (acc[full] - without) / jnp.maximum(acc[full], 1e-8)


class GreedyState(NamedTuple):
  util: jax.Array        # (k,) moving average of the utilisation rates
  caring: jax.Array      # (k,) one-hot: the modality the NEXT step re-balances (zeros: normal)
  steps_left: jax.Array  # int32 (): re-balancing steps still to come
  count: jax.Array       # int32 (): steps seen


def greedy_schedule(threshold: float, window: int, ema: float, *, num_modalities: int,
                    axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """Greedy's re-balancing schedule: ``update(grads, state, *, utilisation, active=True)``
  passes the gradients unchanged and decides whether the next steps re-balance
  (``utilisation`` is ``pmean``-ed over ``axis_name``)."""
  k = check_num_modalities(num_modalities)
  check_value("window", window, lambda w: w >= 1, "must be >= 1")
  check_value("ema", ema, lambda e: 0.0 <= e < 1.0, "must be in [0, 1)")

  def init_fn(params):
    del params
    return GreedyState(jnp.zeros((k,), jnp.float32), jnp.zeros((k,), jnp.float32),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, utilisation=None, active=True, **extra_args):
    del params
    check_extra_args(extra_args, "greedy_schedule")
    require_extra_arg(utilisation, "utilisation", "greedy_schedule",
                      "the (k,) utilisation rates, utilisation_rates(subset_logits, labels)")
    u = jax.lax.stop_gradient(jnp.asarray(utilisation, jnp.float32))
    if axis_name is not None:
      u = jax.lax.pmean(u, axis_name)
    util = jnp.where(state.count > 0, ema * state.util + (1.0 - ema) * u, u)
    busy = state.steps_left > 0
    start = ~busy & active & (util.max() - util.min() > threshold)
    steps_left = jnp.where(busy, state.steps_left - 1, jnp.where(start, window, 0))
    target = jax.nn.one_hot(jnp.argmin(util), k, dtype=jnp.float32)
    caring = jnp.where(steps_left > 0, jnp.where(busy, state.caring, target), 0.0)
    return updates, GreedyState(util, caring, steps_left.astype(jnp.int32), state.count + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
