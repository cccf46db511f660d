"""Greedy-util: a utilisation-rate stand-in for Greedy on our ordinary fusion heads (after
Wu, Jastrzębski, Cho, Geras, "Characterizing and Overcoming the Greedy Nature of Learning in
Multi-modal Deep Neural Networks", ICML 2022;
nyukat/greedy_multimodal_learning, ``Bias_Mitigation_Strong``). Greedy itself, with its MMTM
model and conditional learning speeds, is ``agm_jax.methods.greedy``.

The paper measures imbalance by the *conditional utilisation rate*
``u^m = (A(M) - A(M \\ {m})) / A(M)`` (A: accuracy; how much the prediction loses without m)
and, because that needs extra passes, proxies it by a conditional learning speed of MMTM
"bypass" vs "main" parameters. Our models have no cross-modal bypass, but the subset passes
give ``A(M \\ {m})`` of every training batch for free, so the utilisation rate itself is used:
an exponential moving average ``ū`` (``greedy_util.ema``) of the batch rates. When not already
re-balancing and ``max_m ū^m - min_m ū^m > greedy_util.threshold``, the next
``greedy_util.window`` steps are *re-balancing steps* for the least-utilised modality m (the
released code: a window of 5 steps when ``|d| > epsilon``). In a re-balancing step the loss is the
cross-entropy of ``v({m})``, the model with every other modality absent (zero-padded, as in
the subset passes) — our stand-in for the paper's step, in which m's branch predicts with the
cross-modal input replaced by its running average, so m must learn without leaning on the
others. Normal steps are joint training. The schedule (``ū``, the cared-for modality, steps
left) lives in the ``greedy_schedule`` transform's state (``transforms/greedy.py``) and is
read by the next step's forward. Re-balancing starts inside the modulation window.
Config section ``greedy_util``: ``threshold``, ``window`` (steps), ``ema``, ``start_epoch``,
``end_epoch``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from agm_jax import shapley
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  from_section,
  shapley_metrics,
  subset_step,
)
from agm_jax.transforms import greedy as greedy_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  threshold: float
  window: int            # re-balancing steps (the modulation window is ``epochs``)
  ema: float
  epochs: Window


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  hp = ctx.hp
  return optax.chain(greedy_tx.greedy_schedule(hp.threshold, hp.window, hp.ema,
                                               num_modalities=ctx.k, axis_name=ctx.axis_name),
                     base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  labels = batch["label"]
  caring = jax.lax.stop_gradient(optax.tree_utils.tree_get(opt_state, "caring"))
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, rng)
  singles = jnp.asarray([1 << m for m in range(ctx.k)])
  vf = v.astype(jnp.float32)
  ce_full, d_full = jax.value_and_grad(
      lambda z: shapley.cross_entropy(z, labels).mean())(vf[-1])
  per_single, d_single = jax.vmap(jax.value_and_grad(
      lambda z: shapley.cross_entropy(z, labels).mean()))(vf[singles])
  normal = 1.0 - caring.sum()
  cot = jnp.zeros_like(vf).at[-1].add(normal * d_full)
  cot = cot.at[singles].add(caring[:, None, None] * d_single)
  grads = pullback(cot)
  loss = normal * ce_full + (caring * per_single).sum()
  vs = jax.lax.stop_gradient(vf)
  metrics = shapley_metrics(vs, loss, vs[-1], labels, ctx.modalities)
  return StepOutput(grads, {"utilisation": greedy_tx.utilisation_rates(vs, labels),
                            "active": active}, aux.batch_stats, metrics)


METHOD = Method(name="greedy_util", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("util", "caring"))
