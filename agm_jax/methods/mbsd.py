"""MBSD: self-distillation between the modalities' predictions, as GeWu-Lab's BalanceBenchmark
runs it (``balancemm/trainer/MBSD_trainer.py``; its README lists MBSD among the "objective"
methods and refers to Section 3 of the toolkit's paper, "BalanceBenchmark: A Survey for
Multimodal Imbalance Learning", arXiv 2502.10816).

Source: we could not reach the survey's Section 3 from here, so we could not identify the
original paper the toolkit implements under this name; no code other than the toolkit's was
found. What follows is the toolkit's trainer, with its two questionable steps named.

With ``u_m`` the late head's uni-modal logits and ``p_m = softmax(u_m)``, for every pair of
modalities ``(i, j)`` and example ``b``:

* ``w_b = |p_i[y] - p_j[y]|`` when at least one of the two predicts ``y``, else 0 (a weight:
  no gradient flows through it here; the toolkit builds it from the probabilities in place,
  which lets gradient through);
* ``RS_b = mean_c (u_i - u_j)^2`` (the logits pulled together);
* ``KL_b = p_w (log p_w - p_s)`` with ``p_s``, ``p_w`` the larger and the smaller of
  ``p_i[y]``, ``p_j[y]`` (the toolkit's ``F.kl_div(ps, pw)``, which takes ``ps`` as a
  log-probability: the distillation of the weaker modality's confidence towards the
  stronger one's, as written there).

``L = CE(fused) + sum_m CE(u_m) + sum_pairs mean_b w_b (RS_b + KL_b)`` inside the window;
outside it ``L = CE(fused) + sum_m CE(u_m)`` (the toolkit's). The toolkit writes the k = 2 and
k = 3 cases out by hand; here any k >= 2 (every pair). Needs a late-fusion head. Config
section ``mbsd``: ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  check_late_fusion,
  default_tx,
  from_section,
)


@dataclasses.dataclass(frozen=True)
class HParams:
  window: Window


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "mbsd")
  return default_tx(ctx, base)


def pair_terms(u_i, u_j, labels) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(w, RS, KL)`` per example of one modality pair (see the module docstring)."""
  p_i = jax.nn.softmax(u_i.astype(jnp.float32), -1)
  p_j = jax.nn.softmax(u_j.astype(jnp.float32), -1)
  y_i = jnp.take_along_axis(p_i, labels[:, None], -1)[:, 0]
  y_j = jnp.take_along_axis(p_j, labels[:, None], -1)[:, 0]
  right = (jnp.argmax(u_i, -1) == labels) | (jnp.argmax(u_j, -1) == labels)
  strong, weak = jnp.maximum(y_i, y_j), jnp.minimum(y_i, y_j)
  w = jax.lax.stop_gradient(jnp.where(right, strong - weak, 0.0))
  rs = jnp.mean(jnp.square(u_i.astype(jnp.float32) - u_j.astype(jnp.float32)), -1)
  kl = weak * (jnp.log(jnp.maximum(weak, 1e-30)) - strong)
  return w, rs, kl


def distillation(unimodal: jax.Array, labels: jax.Array) -> jax.Array:
  """``sum_pairs mean_b w_b (RS_b + KL_b)`` of ``(k, B, K)`` uni-modal logits."""
  total = jnp.zeros((), jnp.float32)
  for i, j in itertools.combinations(range(unimodal.shape[0]), 2):
    w, rs, kl = pair_terms(unimodal[i], unimodal[j], labels)
    total = total + jnp.mean(w * (rs + kl))
  return total


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    uni = ctx.model.apply({"params": p}, feats, method="unimodal_logits")
    ce = shapley.cross_entropy(logits, labels).mean()
    own = shapley.cross_entropy(uni, labels[None]).mean(-1).sum()
    reg = jnp.where(active, distillation(uni, labels), 0.0)
    return ce + own + reg, branches.Objective(logits, stats, True)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  return StepOutput(out.grads, {}, out.batch_stats, out.metrics)


METHOD = Method(name="mbsd", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True)
