"""Greedy (Wu, Jastrzębski, Cho, Geras, "Characterizing and Overcoming the Greedy Nature of
Learning in Multi-modal Deep Neural Networks", ICML 2022) as optax transformations.

Greedy as released (nyukat/greedy_multimodal_learning, ``src/callbacks.py``
``Bias_Mitigation_Strong``; method ``greedy``): :func:`learning_speeds` (the ratio
``sum ||g||^2 / sum ||w||^2`` of a group of parameters), :func:`conditional_speed_gap` (the
difference of the two modalities' conditional learning speeds) and :func:`curation_step` (the
re-balancing schedule), run by the :func:`greedy_rebalance` transform.

The utilisation-rate stand-in (method ``greedy_util``): :func:`utilisation_rates` and the
:func:`greedy_schedule` transform, below.

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


# --------------------------------------------------------------------------- Greedy (released)


def learning_speeds(grads, params, groups) -> jax.Array:
  """``(n,)``: for each group ``i``, ``sum ||g||^2 / sum ||w||^2`` over its leaves (the released
  ``compute_BDR``'s ``gn / wn``, squared norms summed over the group's parameters, then
  divided). ``groups(path) -> tuple of group indices`` (``path`` a tuple of key names) says
  which groups a leaf counts in; ``n`` is one more than the largest index any leaf gets. A
  group whose weights are all zero gets ``inf`` (or ``nan`` with zero gradients), as there."""
  pairs = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_grads = jax.tree.leaves(grads)
  if len(flat_grads) != len(pairs):
    raise ValueError(f"grads has {len(flat_grads)} leaves, params {len(pairs)}")
  members = [tuple(groups(_names(path))) for path, _ in pairs]
  n = 1 + max((i for ids in members for i in ids), default=-1)
  if n == 0:
    raise ValueError("groups assigned no parameter to any group")
  wn = [jnp.zeros((), jnp.float32) for _ in range(n)]
  gn = [jnp.zeros((), jnp.float32) for _ in range(n)]
  for (_, w), g, ids in zip(pairs, flat_grads, members, strict=True):
    w2 = jnp.sum(jnp.square(jnp.asarray(w, jnp.float32)))
    g2 = jnp.sum(jnp.square(jnp.asarray(g, jnp.float32)))
    for i in ids:
      wn[i] = wn[i] + w2
      gn[i] = gn[i] + g2
  return jnp.stack(gn) / jnp.stack(wn)


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def conditional_speed_gap(bypass: jax.Array, main: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(d, speeds)`` from the accumulated learning speeds of the two modalities' bypass (MMTM)
  and main (uni-modal branch) parameters, each ``(2,)``: ``speeds^m = log10(bypass^m /
  main^m)`` (the released ``BDR_m``) and ``d = speeds^0 - speeds^1`` (``d_BDR``)."""
  speeds = jnp.log10(bypass / main)
  return speeds[0] - speeds[1], speeds


class CurationState(NamedTuple):
  bypass: jax.Array      # (2,) accumulated learning speeds of the MMTM (bypass) parameters
  main: jax.Array        # (2,) accumulated learning speeds of the uni-modal branches
  speed: jax.Array       # (2,) conditional learning speeds log10(bypass / main), last computed
  gap: jax.Array         # () d = speed[0] - speed[1], last computed
  curation: jax.Array    # bool (): the NEXT step is a re-balancing step
  caring: jax.Array      # int32 (): the modality it re-balances
  steps: jax.Array       # int32 (): re-balancing steps done in this window


def curation_init() -> CurationState:
  z2 = jnp.zeros((2,), jnp.float32)
  return CurationState(z2, z2, z2, jnp.zeros((), jnp.float32), jnp.zeros((), bool),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def curation_step(state: CurationState, bypass: jax.Array, main: jax.Array, active,
                  *, threshold: float, window: int) -> CurationState:
  """One step of the released schedule (``Bias_Mitigation_Strong.on_backward_end``), after the
  step's gradients: ``bypass``/``main`` ``(2,)`` are this step's learning speeds.

  * outside the window (``active`` False; released: before ``starting_epoch``) and in a normal
    step: the speeds are accumulated and ``d`` recomputed;
  * inside the window, in a normal step: if ``|d| > threshold`` the next ``window`` steps
    re-balance modality 0 if ``d > 0`` else 1 (the modality whose cross-modal parameters
    learn relatively faster);
  * in a re-balancing step nothing is accumulated; after ``window`` of them, normal again.
  """
  active = jnp.asarray(active, bool)
  busy = active & state.curation
  acc_bypass = jnp.where(busy, state.bypass, state.bypass + bypass)
  acc_main = jnp.where(busy, state.main, state.main + main)
  gap, speed = conditional_speed_gap(acc_bypass, acc_main)
  gap = jnp.where(busy, state.gap, gap)
  speed = jnp.where(busy, state.speed, speed)
  start = active & ~state.curation & (jnp.abs(gap) > threshold)
  steps = jnp.where(busy, state.steps + 1, 0).astype(jnp.int32)
  curation = jnp.where(busy, steps < window, start)
  caring = jnp.where(busy, state.caring, jnp.where(start & (gap < 0), 1, 0)).astype(jnp.int32)
  return CurationState(acc_bypass, acc_main, speed, gap.astype(jnp.float32), curation, caring,
                       steps)


class GreedyRebalanceState(NamedTuple):
  schedule: CurationState
  rebalance: jax.Array   # (2,) one-hot of the modality the NEXT step re-balances (0: normal)
  cond_speed: jax.Array  # (2,) the conditional learning speeds (logged)


def greedy_rebalance(threshold: float, window: int, groups, *, num_modalities: int = 2
                     ) -> optax.GradientTransformationExtraArgs:
  """Greedy's re-balancing schedule as released: ``update(grads, state, params, *,
  active=True)`` passes the gradients unchanged; from them and ``params`` it measures the
  learning speeds of the groups ``groups(path) -> indices`` (0, 1: modality 0's, 1's main
  branch; 2, 3: their bypass parameters; :func:`learning_speeds`) and runs
  :func:`curation_step`. Put it first in the chain (it must see the raw, averaged
  gradients)."""
  if num_modalities != 2:
    raise ValueError(f"num_modalities must be 2 (Greedy compares two modalities' conditional "
                     f"learning speeds), got {num_modalities}")
  check_value("window", window, lambda w: w >= 1, "must be >= 1")
  check_value("threshold", threshold, lambda t: t >= 0, "must be >= 0")

  def init_fn(params):
    del params
    z2 = jnp.zeros((2,), jnp.float32)
    return GreedyRebalanceState(curation_init(), z2, z2)

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    check_extra_args(extra_args, "greedy_rebalance")
    if params is None:
      raise ValueError("greedy_rebalance needs params (the weight norms of the speeds)")
    speeds = learning_speeds(jax.lax.stop_gradient(updates), params, groups)
    if speeds.shape != (4,):
      raise ValueError(f"groups must assign groups 0 … 3, got {speeds.shape[0]} groups")
    sched = curation_step(state.schedule, speeds[2:], speeds[:2], active,
                          threshold=threshold, window=window)
    rebalance = jnp.where(sched.curation,
                          jax.nn.one_hot(sched.caring, 2, dtype=jnp.float32), 0.0)
    return updates, GreedyRebalanceState(sched, rebalance, sched.speed)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
