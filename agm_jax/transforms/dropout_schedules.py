"""Dropout rates as pure functions of the step, evolutional dropout's data-dependent sampling,
and the optimiser wrapper that keeps the step count and the last drop rates (T-PAMI 2024
Table 6's neuron-dropout baselines; ModDrop's logged rates).

The T-PAMI comparison (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal
Learning", T-PAMI 2024, Sec. 4.3.4, Table 6) cites each schedule without its settings; the
formulas are the cited papers', the default values ``configs/default.py``'s (our choice).
``step`` counts the optimiser updates before this one (0 on the first), ``p`` is a drop rate:

* constant (Dropout, Srivastava et al. 2014):   ``p(t) = p``;
* annealed (Rennie, Goel, Thomas, "Annealed dropout training of deep networks", SLT 2014):
  the rate falls linearly from ``p`` to 0 over ``anneal_steps`` updates and stays 0,
  ``p(t) = p * max(0, 1 - t / anneal_steps)``;
* curriculum (Morerio et al., "Curriculum Dropout", ICCV 2017): the *retain* probability
  ``theta(t) = (1 - theta_bar) * exp(-gamma * t) + theta_bar`` goes from 1 to the floor
  ``theta_bar = 1 - p``, so ``p(t) = 1 - theta(t) = p * (1 - exp(-gamma * t))``;
* evolutional (Li, Gong, Yang, "Improved Dropout for Shallow and Deep Learning", NeurIPS
  2016): features sampled from a multinomial whose probabilities come from the mini-batch's
  second-order statistics, ``q_i = sqrt(sum_j x_ji^2) / sum_l sqrt(sum_j x_jl^2)``
  (:func:`evolutional_probabilities`); each example draws ``s`` features with replacement and
  keeps feature i scaled by ``count_i / (s * q_i)`` (:func:`evolutional_mask`), an unbiased
  mask. Unsure: the number of draws ``s``; here ``s = round((1 - p) * d)`` so ``p`` plays
  the part of a drop rate (a feature with ``q_i = 1/d`` is then missed with probability
  about ``exp(-(1 - p))``, not ``p``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.transforms.common import require_extra_arg

SCHEDULES = ("constant", "annealed", "curriculum", "evolutional")


def constant_rate(step, *, p: float) -> jax.Array:
  """Dropout's fixed rate ``p``."""
  del step
  return jnp.asarray(p, jnp.float32)


def annealed_rate(step, *, p: float, anneal_steps: int) -> jax.Array:
  """Annealed dropout: ``p * max(0, 1 - step / anneal_steps)``."""
  if anneal_steps < 1:
    raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
  t = jnp.asarray(step, jnp.float32)
  return p * jnp.maximum(0.0, 1.0 - t / anneal_steps)


def curriculum_rate(step, *, p: float, gamma: float) -> jax.Array:
  """Curriculum dropout: ``1 - theta(t)``, ``theta(t) = (1 - theta_bar) exp(-gamma t) +
  theta_bar`` with ``theta_bar = 1 - p``; that is ``p * (1 - exp(-gamma * step))``."""
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  theta_bar = 1.0 - p
  theta = (1.0 - theta_bar) * jnp.exp(-gamma * jnp.asarray(step, jnp.float32)) + theta_bar
  return 1.0 - theta


def drop_rate(schedule: str, step, *, p: float, anneal_steps: int, gamma: float) -> jax.Array:
  """The scheduled rate at ``step`` (evolutional: ``p``, the rate its number of draws uses)."""
  if schedule == "annealed":
    return annealed_rate(step, p=p, anneal_steps=anneal_steps)
  if schedule == "curriculum":
    return curriculum_rate(step, p=p, gamma=gamma)
  if schedule in ("constant", "evolutional"):
    return constant_rate(step, p=p)
  raise ValueError(f"schedule {schedule!r} is unknown; valid: {list(SCHEDULES)}")


def bernoulli_dropout(x, rate, key) -> jax.Array:
  """Inverted dropout: each entry zeroed with probability ``rate``, the rest scaled by
  ``1 / (1 - rate)`` (``rate`` 0: ``x`` unchanged)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.maximum(1.0 - rate, 1e-6), 0.0).astype(x.dtype)


def evolutional_probabilities(x) -> jax.Array:
  """``(d,)`` sampling probabilities of the ``(B, d)`` mini-batch ``x``:
  ``sqrt(sum_j x_ji^2)`` normalised to sum 1 (uniform for an all-zero batch)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=0))
  total = norms.sum()
  uniform = jnp.full_like(norms, 1.0 / norms.shape[0])
  return jnp.where(total > 0, norms / jnp.maximum(total, 1e-30), uniform)


def evolutional_mask(x, key, *, draws: int) -> jax.Array:
  """``(B, d)`` multiplier: per example ``draws`` features sampled with replacement from
  :func:`evolutional_probabilities`, feature i scaled by ``count_i / (draws * q_i)``
  (expectation 1 wherever ``q_i > 0``)."""
  if draws < 1:
    raise ValueError(f"evolutional dropout needs >= 1 draw, got {draws}")
  q = jax.lax.stop_gradient(evolutional_probabilities(x))
  d = q.shape[0]
  idx = jax.random.categorical(key, jnp.log(q), shape=(x.shape[0], draws))
  counts = jax.vmap(lambda i: jnp.bincount(i, length=d))(idx).astype(jnp.float32)
  return jnp.where(q > 0, counts / (draws * jnp.maximum(q, 1e-30)), 0.0)


class DropState(NamedTuple):
  inner: optax.OptState
  count: jax.Array       # () int32: the updates so far (the schedules' step)
  drop_rate: jax.Array   # (k,) the last step's fraction of each modality's features dropped


def with_drop_state(inner: optax.GradientTransformation, *, num_modalities: int,
                    axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """``inner`` with the step count and the last drop rates kept in the optimiser state.

  ``update(grads, state, params=None, *, drop_rate, **extra_args)``: ``drop_rate`` ``(k,)``
  (averaged over ``axis_name``) is stored, ``count`` advances, the rest goes to ``inner``."""
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return DropState(inner.init(params), jnp.zeros((), jnp.int32),
                     jnp.zeros((num_modalities,), jnp.float32))

  def update_fn(updates, state, params=None, *, drop_rate=None, **extra_args):
    require_extra_arg(drop_rate, "drop_rate", "with_drop_state",
                      "the (k,) fraction of each modality's features dropped")
    rate = jax.lax.stop_gradient(jnp.asarray(drop_rate, jnp.float32))
    if rate.shape != (num_modalities,):
      raise ValueError(f"drop_rate must have shape ({num_modalities},), got {rate.shape}")
    if axis_name is not None:
      rate = jax.lax.pmean(rate, axis_name)
    updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
    return updates, DropState(inner_state, state.count + 1, rate)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
