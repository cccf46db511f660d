"""Greedy: re-balancing the greedy learner (Wu, Jastrzębski, Cho, Geras, "Characterizing and
Overcoming the Greedy Nature of Learning in Multi-modal Deep Neural Networks", ICML 2022;
nyukat/greedy_multimodal_learning, ``Bias_Mitigation_Strong``).

The paper measures imbalance by the *conditional utilisation rate*
``u^m = (A(M) - A(M \\ {m})) / A(M)`` (A: accuracy; how much the prediction loses without m)
and, because that needs extra passes, proxies it by a conditional learning speed of MMTM
"bypass" vs "main" parameters. Our models have no cross-modal bypass, but the subset passes
give ``A(M \\ {m})`` of every training batch for free, so the utilisation rate itself is used:
an exponential moving average ``ū`` (``greedy.ema``) of the batch rates. When not already
re-balancing and ``max_m ū^m - min_m ū^m > greedy.threshold``, the next ``greedy.window``
steps are *re-balancing steps* for the least-utilised modality m (the released code: a
window of 5 steps when ``|d| > epsilon``). In a re-balancing step the loss is the
cross-entropy of ``v({m})``, the model with every other modality absent (zero-padded, as in
the subset passes) — our stand-in for the paper's step, in which m's branch predicts with the
cross-modal input replaced by its running average, so m must learn without leaning on the
others. Normal steps are joint training. The schedule (``ū``, the cared-for modality, steps
left) lives in the ``greedy`` transform's state and is read by the next step's forward.
Re-balancing starts inside the modulation window ``agm.start_epoch … agm.end_epoch``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, inputs_of
from agm_jax.train import forward, parallel


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
  k = shapley.check_num_modalities(num_modalities)
  if window < 1:
    raise ValueError(f"greedy.window must be >= 1, got {window}")
  if not 0.0 <= ema < 1.0:
    raise ValueError(f"greedy.ema must be in [0, 1), got {ema}")

  def init_fn(params):
    del params
    return GreedyState(jnp.zeros((k,), jnp.float32), jnp.zeros((k,), jnp.float32),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, utilisation, active=True, **extra_args):
    del params, extra_args
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


def make_tx(config, base, k):
  g = config.greedy
  return optax.chain(greedy_schedule(float(g.threshold), int(g.window), float(g.ema),
                                     num_modalities=k, axis_name=parallel.axis_name(config)),
                     base)


def gradients(ctx, params, batch_stats, batch, rng, active, *, opt_state):
  labels = batch["label"]
  caring = jax.lax.stop_gradient(optax.tree_utils.tree_get(opt_state, "caring"))

  def subsets(p):
    return forward.subset_forward(ctx.model, p, batch_stats, inputs_of(batch), ctx.modalities,
                                  subset_bn="batch", pad=ctx.pad, key=rng, grad_masked=True,
                                  fast=ctx.fast)

  v, vjp_fn, aux = jax.vjp(subsets, params, has_aux=True)
  k = ctx.k
  singles = jnp.asarray([1 << m for m in range(k)])
  vf = v.astype(jnp.float32)
  ce_full, d_full = jax.value_and_grad(
      lambda z: shapley.cross_entropy(z, labels).mean())(vf[-1])
  ce_single, d_single = jax.value_and_grad(
      lambda z: shapley.cross_entropy(z, labels[None]).mean(-1).sum())(vf[singles])
  normal = 1.0 - caring.sum()
  cot = jnp.zeros_like(vf).at[-1].add(normal * d_full)
  cot = cot.at[singles].add(caring[:, None, None] * d_single)
  grads = vjp_fn(cot.astype(v.dtype))[0]
  per_single = jax.vmap(lambda z: shapley.cross_entropy(z, labels).mean())(vf[singles])
  loss = normal * ce_full + (caring * per_single).sum()
  del ce_single
  vs = jax.lax.stop_gradient(vf)
  metrics = branches.metrics_of(vs, loss, vs[-1], labels, ctx.modalities)
  return StepOutput(grads, {"utilisation": utilisation_rates(vs, labels), "active": active},
                    aux.batch_stats, metrics)


METHOD = Method(name="greedy", gradients=gradients, make_tx=make_tx, requires_separable=True,
                reads_opt_state=True, logged_state=("util", "caring"))
