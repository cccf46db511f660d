"""InfoReg: Information Acquisition Regulation (Huang, Wei, Yang, Hu, "Adaptive Unimodal
Regulation for Balanced Multimodal Information Acquisition", CVPR 2025, arXiv 2503.18595;
authors' code GeWu-Lab/InfoReg_CVPR2025 ``main.py``; in no toolkit).

Early in training (the *prime learning window*) the information-sufficient modality acquires
information fastest and suppresses the others; InfoReg slows it down while the window lasts.
As the authors' code runs it:

* **Loss.** ``CE(fused) + sum_m CE(u_m)`` with ``u_m = W_m z_m + b/k`` the late head's
  uni-modal logits (the code backpropagates the three losses).
* **Which modality, how strongly.** Per step, ``score_m = sum_i softmax(u_m)_i[y_i]`` (no
  gradient); the modality with the highest score is regulated with strength
  ``beta = strength[m] * exp(tanh(score_best - score_runner_up))``, the others not (a tie:
  none). The code's constants are 0.95 when audio leads and 0.1 when visual leads
  (``strength``, in modality order; k = 2 in the code, the runner-up generalises it).
* **Regulation** (``transforms.inforeg``): the regulated encoder's gradient gets
  ``beta (theta - theta_epoch_start)``, a pull towards its parameters at the start of the epoch.
* **Prime learning window.** Before every epoch, from the history of the per-epoch Fisher
  trace (the sum over the epoch's steps of ``mean(g^2)`` per weight tensor, summed over the
  encoder's weight tensors): ``k = (tr1 - tr2) / tr1`` with ``tr1``/``tr2`` the means of the
  last 10 epochs' traces and of the 10 before the last (sums / 10, as the code, also while
  fewer exist); the regulation runs while ``k > 0.05`` (always in epoch 0). The code reads the
  audio encoder's trace; ``window_trace``: a modality name, ``"sum"`` (all encoders) or
  ``"auto"`` (default: ``"audio"`` when the model has it, as the code, else ``"sum"``).

Everything carried (the epoch-start anchor, the traces, the window flag) is in the optimiser
state. Needs a late-fusion head; any k >= 2. Config section ``inforeg``: ``strength``
(0.95, 0.1: ``main.py``), ``window_trace``. The state logs ``strength/<m>`` (the last step's
``beta`` per modality).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import (
  Method,
  StepOutput,
  check_late_fusion,
  find_state,
  from_section,
  unimodal_ce,
  update_state,
)
from agm_jax.transforms import inforeg as inforeg_tx
from agm_jax.transforms.score_ratio import ogm_scores


@dataclasses.dataclass(frozen=True)
class HParams:
  strength: tuple[float, ...]
  window_trace: str

  def __post_init__(self):
    if any(s < 0 for s in self.strength):
      raise ValueError(f"strength must be >= 0, got {self.strength}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def strengths(ctx) -> jax.Array:
  k = ctx.k
  if len(ctx.hp.strength) != k:
    raise ValueError(f"strength has {len(ctx.hp.strength)} values but the model has {k} "
                     "modalities (one per modality, in modality order)")
  return jnp.asarray(ctx.hp.strength, jnp.float32)


def trace_modality(ctx) -> int | None:
  name = ctx.hp.window_trace
  if name == "auto":
    name = "audio" if "audio" in ctx.modalities else "sum"
  if name == "sum":
    return None
  if name not in ctx.modalities:
    raise ValueError(f"window_trace {name!r} is not 'auto', 'sum' or one of the modalities "
                     f"{list(ctx.modalities)}")
  return ctx.modalities.index(name)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "inforeg")
  strengths(ctx)
  trace_modality(ctx)
  return inforeg_tx.inforeg(base, num_modalities=ctx.k)


def regulation(scores: jax.Array, strength: jax.Array) -> jax.Array:
  """``(k,)``: ``strength[best] * exp(tanh(score_best - score_runner_up))`` for the modality
  with the highest score, 0 for the others (and for all on a tie)."""
  order = jnp.argsort(-scores)
  best, runner_up = order[0], order[1]
  gap = scores[best] - scores[runner_up]
  beta = strength[best] * jnp.exp(jnp.tanh(gap))
  return jnp.where((jnp.arange(scores.shape[0]) == best) & (gap > 0), beta, 0.0)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  labels = batch["label"]

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    uni = ctx.model.apply({"params": p}, feats, method="unimodal_logits")
    ce = shapley.cross_entropy(logits, labels).mean()
    return ce + unimodal_ce(uni, labels), branches.Objective(logits, stats, True, uni)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  scores = ogm_scores(out.extra.astype(jnp.float32), labels)
  if ctx.axis_name is not None:
    scores = jax.lax.psum(scores, ctx.axis_name)
  beta = regulation(scores, strengths(ctx))
  return StepOutput(out.grads, {"strength": beta}, out.batch_stats, out.metrics)


def epoch_end(ctx, state, epoch, evaluate):
  del epoch, evaluate
  modality = trace_modality(ctx)
  params = jax.tree.map(np.asarray, state.params)
  opt_state = update_state(state.opt_state, inforeg_tx.InfoRegState,
                           lambda s: inforeg_tx.epoch_update(s, params, modality=modality))
  return state.replace(opt_state=opt_state)


def window_is_open(opt_state) -> bool:
  return bool(np.asarray(find_state(opt_state, inforeg_tx.InfoRegState).open))


METHOD = Method(name="inforeg", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("strength",), epoch_end=epoch_end)
