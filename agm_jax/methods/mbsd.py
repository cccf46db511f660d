"""MBSD: self-distillation between the modalities' predictions, as GeWu-Lab's BalanceBenchmark
runs it (``balancemm/trainer/MBSD_trainer.py``; its README lists MBSD among the "objective"
methods and refers to Section 3 of the toolkit's paper, "BalanceBenchmark: A Survey for
Multimodal Imbalance Learning", arXiv 2502.10816).

Source: we could not reach the survey's Section 3 from here, so we could not identify the
original paper the toolkit implements under this name; no code other than the toolkit's was
found. What follows is the toolkit's trainer, with its two questionable steps named.

With ``u_m`` the late head's uni-modal logits and ``p_m = softmax(u_m)``, for every pair of
modalities ``(i, j)`` and example ``b`` (``MBSD_trainer.py:129-224``):

* ``w_b = |p_i[y] - p_j[y]|`` when at least one of the two predicts ``y``, else 0 (a weight:
  no gradient flows through it here; the toolkit builds it from the probabilities in place,
  which lets gradient through);
* ``RS_b = mean_c (u_i - u_j)^2`` (the logits pulled together), or ``mean_c (p_i -
  p_j)^2`` on the probabilities (``form`` below);
* ``KL_b = p_w (log p_w - p_s)`` with ``p_s``, ``p_w`` the larger and the smaller of
  ``p_i[y]``, ``p_j[y]`` (the toolkit's ``F.kl_div(ps, pw)``, which takes ``ps`` as a
  log-probability: the distillation of the weaker modality's confidence towards the
  stronger one's, as written there).

``L = CE(fused) + sum_m CE(u_m) + D`` inside the window (``:159``, ``:224``); outside it the
fused cross-entropy alone, ``L = CE(fused)`` (``total_loss = loss['out']``, ``:226-228``).

The toolkit writes the k = 2 and k = 3 cases out by hand, and they differ; ``form`` picks:

* ``"toolkit"``: as written there. k = 2: ``RS`` on the logits (``:132``), ``D = mean_b
  w_b (RS_b + KL_b)`` of the one pair. k = 3: ``RS`` on the probabilities, ``mean_c (p_i -
  p_j)^2`` (``:197-199``), and ``D`` the mean over the three pairs (``:214``, ``:222``). For
  k > 3 (the toolkit's k = 3 branch would read only the first three modalities) the k = 3
  form over every pair.
* ``"logits"``: the k = 2 form for any k: ``RS`` on the logits and ``D`` the sum over the
  pairs (agm-jax's reading before ``form`` existed).

The two agree for k = 2. Any k >= 2; needs a late-fusion head. Config section ``mbsd``:
``form``, ``start_epoch``, ``end_epoch``.
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
  one_of,
  unimodal_ce,
)

FORMS = ("toolkit", "logits")


@dataclasses.dataclass(frozen=True)
class HParams:
  form: str
  window: Window

  def __post_init__(self):
    one_of("form", self.form, FORMS)


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "mbsd")
  return default_tx(ctx, base)


def pair_terms(u_i, u_j, labels, rs_on_probs: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(w, RS, KL)`` per example of one modality pair (see the module docstring); ``RS`` on
  the probabilities if ``rs_on_probs``, else on the logits."""
  p_i = jax.nn.softmax(u_i.astype(jnp.float32), -1)
  p_j = jax.nn.softmax(u_j.astype(jnp.float32), -1)
  y_i = jnp.take_along_axis(p_i, labels[:, None], -1)[:, 0]
  y_j = jnp.take_along_axis(p_j, labels[:, None], -1)[:, 0]
  right = (jnp.argmax(u_i, -1) == labels) | (jnp.argmax(u_j, -1) == labels)
  strong, weak = jnp.maximum(y_i, y_j), jnp.minimum(y_i, y_j)
  w = jax.lax.stop_gradient(jnp.where(right, strong - weak, 0.0))
  a, b = (p_i, p_j) if rs_on_probs else (u_i.astype(jnp.float32), u_j.astype(jnp.float32))
  rs = jnp.mean(jnp.square(a - b), -1)
  kl = weak * (jnp.log(jnp.maximum(weak, 1e-30)) - strong)
  return w, rs, kl


def distillation(unimodal: jax.Array, labels: jax.Array, form: str) -> jax.Array:
  """``D`` of ``(k, B, K)`` uni-modal logits: ``mean_b w_b (RS_b + KL_b)`` over the pairs,
  summed ("logits") or, as the toolkit, averaged with ``RS`` on the probabilities for k > 2
  ("toolkit")."""
  one_of("form", form, FORMS)
  k = unimodal.shape[0]
  toolkit = form == "toolkit"
  pairs = list(itertools.combinations(range(k), 2))
  total = jnp.zeros((), jnp.float32)
  for i, j in pairs:
    w, rs, kl = pair_terms(unimodal[i], unimodal[j], labels, rs_on_probs=toolkit and k > 2)
    total = total + jnp.mean(w * (rs + kl))
  return total / len(pairs) if toolkit else total


def loss(logits, unimodal, labels, active, form: str) -> jax.Array:
  """``CE(fused) + sum_m CE(u_m) + D`` inside the window, ``CE(fused)`` outside
  (``MBSD_trainer.py:159``, ``:224``, ``:226-228``)."""
  ce = shapley.cross_entropy(logits, labels).mean()
  regulated = unimodal_ce(unimodal, labels) + distillation(unimodal, labels, form)
  return ce + jnp.where(active, regulated, 0.0)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    uni = ctx.model.apply({"params": p}, feats, method="unimodal_logits")
    total = loss(logits, uni, labels, active, ctx.hp.form)
    return total, branches.Objective(logits, stats, True)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  return StepOutput(out.grads, {}, out.batch_stats, out.metrics)


METHOD = Method(name="mbsd", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True)
