"""ReconBoost (Hua, Xu, Bao, Yang, Huang, "ReconBoost: Boosting Can Achieve Modality
Reconcilement", ICML 2024; authors' code huacong/ReconBoost ``train.py``, ``schedule.py``,
``models/dynamic_net.py``; BalanceBenchmark ``balancemm/trainer/ReconBoost_trainer.py``).

The model is an ensemble of one learner per modality: learner m's logits are the late head's
uni-modal logits ``u_m`` (encoder m and its own block of the last linear layer: ``W_m f_m +
b/k`` of a concat head, ``W_m f_m + b_m`` of a sum head), the ensemble ``F = sum_m u_m`` (= the
fused logits of the head). The authors' learners instead share one head: with
``common_space`` (``train.py:61``, default True) every learner's classifier is replaced by the
ensemble's ``head`` (``train.py:287-288``: ``model.fc = net_ensemble.head``), a two-layer MLP
``Linear(512, 256) -> ReLU -> Linear(256, K)`` (``models/dynamic_net.py:5-15``, ``:42``), and
the ensemble is ``boost_rate * sum_m head(f_m)`` (``dynamic_net.py:135``, ``:170``). So their
learners map every modality's features through one nonlinear classifier (equal feature
widths), and a boosting phase, which trains ``model.parameters()`` with that head in it
(``train.py:296``), moves every other learner's logits too (including ``F_{-m}`` of the next
batches); here the boosting loss reaches only ``W_m`` and learner m's bias term, so the other
learners' logits move only through a concat head's shared ``b`` (by the same amount for every
learner) and weight decay (below). Training goes in
stages; stage ``s`` picks modality ``m = s mod k`` (the authors' fixed round-robin
``schedule_model``) and runs two phases:

1. boosting, ``boost_epochs`` epochs: only learner m is trained (the gradient reaches encoder
   m, its head block and the bias), against the other learners' ensemble
   ``F_{-m} = F - u_m`` (no gradient) with the reconcilement regulariser. With ``p = softmax``
   and one-hot ``y``, per example (the authors' code; ``mean`` over the K classes)::

       L_boost = mean_c [ -ce_weight y_c log p(u_m)_c + recon_weight y_c p(F_{-m})_c log p(u_m)_c ]
               = (ce_weight - recon_weight * p(F_{-m})_y) * CE(u_m, y) / K
               = (ce_weight * CE(u_m, y) - recon_weight * KL(y * p(F_{-m}) || p(u_m))) / K + const

   i.e. the paper's cross-entropy minus the KL-based reconcilement term: examples the other
   modalities already get right weigh less (gradient boosting's residual fitting, Sec. 4).
   From the second stage on, the memory-consolidation term ``consolidation * mean_{i,c}
   (p(u_m)_ic - p(u_{m-1})_ic)^2`` (m-1: the previous modality, cyclic) is added; in the
   authors' code both sides are detached, so it has no gradient (``consolidation_grad=False``,
   the default); ``True`` lets its gradient reach learner m (the paper's reading). The other
   modalities' encoders do not move during the phase (their updates are zeroed after the
   optimiser: no momentum remainder, no weight decay; the authors build a fresh optimiser per
   phase). The head's parameters are not frozen: learner m's block and bias get the boosting
   gradient; the other learners' blocks (and a sum head's other biases) get none, but the
   optimiser's weight decay (if any) still shrinks them.
   With ``reset_optimizer`` (default, the authors' fresh SGD per phase) the base optimiser's
   floating-point buffers (momentum) are zeroed when a phase ends; step counts and the
   learning-rate schedule carry on (False: BalanceBenchmark's one optimiser throughout).
2. global rectification, ``rectify_epochs`` epochs: every learner trained on ``CE(F, y)``.

The schedule position (the number of finished epochs) lives in the optimiser state
(:class:`ReconState`, a ``carry`` transform at the head of ``tx``, advanced by ``epoch_end``),
so a resumed run continues the same stage and phase; ``learner/<m>`` logs which learner the
boosting phase trains (all 0 in a rectification epoch). Outside the window
(``start_epoch``/``end_epoch``) the step is plain joint training (``CE(F)``); the schedule
still advances.

Differences from the authors' code, kept simple here: every learner is in the ensemble from
the start (the code starts from an empty ensemble, a constant ``c0``, and adds each learner
after its first boosting phase); the ensemble has no learnable ``boost_rate`` (the code's
starts at 1); one learning rate and schedule for both phases (the code's ``m_lr``/``e_lr``
are both 0.01 by default).
Needs a late-fusion head (uni-modal logits); any k >= 2.

Config section ``reconboost``: ``ce_weight`` (5), ``recon_weight`` (1), ``consolidation``
(0.5) (the authors' ``weight1``, ``weight2``, ``alpha``, also BalanceBenchmark's),
``consolidation_grad``, ``reset_optimizer``, ``boost_epochs``, ``rectify_epochs`` (1, 1:
BalanceBenchmark's ``T_epochs``; the authors' ``epochs_per_stage``/``correct_epoch`` are 4,
4), ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  check_late_fusion,
  from_section,
)
from agm_jax.transforms import carry as carry_tx
from agm_jax.transforms import partition


@dataclasses.dataclass(frozen=True)
class HParams:
  ce_weight: float
  recon_weight: float
  consolidation: float
  consolidation_grad: bool
  reset_optimizer: bool
  boost_epochs: int
  rectify_epochs: int
  window: Window

  def __post_init__(self):
    for name in ("ce_weight", "recon_weight", "consolidation"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.boost_epochs < 1:
      raise ValueError(f"boost_epochs must be >= 1, got {self.boost_epochs}")
    if self.rectify_epochs < 0:
      raise ValueError(f"rectify_epochs must be >= 0, got {self.rectify_epochs}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


class ReconState(NamedTuple):
  epoch: jax.Array     # () int32: finished epochs (the schedule position)
  learner: jax.Array   # (k,) float32: one-hot of the learner the last step boosted (logged)


def keep_only(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner`` whose updates are multiplied by the keyword ``keep`` (a tree of per-leaf 0/1
  scalars, the params' structure): a learner not being boosted does not move at all (no
  momentum remainder, no weight decay), as under the authors' per-phase optimiser."""
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, *, keep, **extra_args):
    updates, state = inner.update(updates, state, params, **extra_args)
    return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, keep), state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def make_tx(ctx, base):
  if ctx.k < 2:
    raise ValueError(f"reconboost needs at least 2 modalities, got {ctx.k}")
  check_late_fusion(ctx.model, "reconboost")
  k = ctx.k
  return carry_tx.with_carry(
      keep_only(base),
      lambda _: ReconState(jnp.zeros((), jnp.int32), jnp.zeros((k,), jnp.float32)),
      name="reconboost")


def keep_tree(params, m, boosting) -> dict:
  """Per-leaf 1/0: while boosting learner ``m`` every other modality's encoder is frozen."""
  def scale(key):
    i = partition.modality_index((key,))
    if i == partition.SHARED:
      return jnp.float32(1.0)
    return jnp.where(jnp.logical_and(boosting, i != m), 0.0, 1.0).astype(jnp.float32)
  return {key: jax.tree.map(lambda _, v=scale(key): v, sub) for key, sub in params.items()}


def schedule(epoch, k: int, boost_epochs: int, rectify_epochs: int):
  """``(stage, modality, boosting)`` of ``epoch``: stage ``epoch // (boost + rectify)``,
  its modality ``stage mod k``, and whether the epoch is in the stage's boosting phase."""
  period = boost_epochs + rectify_epochs
  stage = epoch // period
  return stage, stage % k, (epoch % period) < boost_epochs


def boosting_loss(u, labels, m, *, ce_weight: float, recon_weight: float) -> jax.Array:
  """The authors' per-example boosting loss of learner ``m`` (see the module docstring),
  averaged over the batch; ``u`` the ``(k, B, K)`` uni-modal logits."""
  u = u.astype(jnp.float32)
  others = jax.lax.stop_gradient(u.sum(0) - u[m])
  p_others = jnp.take_along_axis(jax.nn.softmax(others, -1), labels[:, None], -1)[:, 0]
  ce = shapley.cross_entropy(u[m], labels)
  return ((ce_weight - recon_weight * p_others) * ce).mean() / u.shape[-1]


def consolidation_loss(u, m, prev, *, grad: bool) -> jax.Array:
  """``mean_{i,c} (p(u_m) - p(u_prev))^2``; the gradient reaches ``u_m`` only with ``grad``."""
  p = jax.nn.softmax(u[m].astype(jnp.float32), -1)
  q = jax.lax.stop_gradient(jax.nn.softmax(u[prev].astype(jnp.float32), -1))
  p = p if grad else jax.lax.stop_gradient(p)
  return jnp.mean(jnp.square(p - q))


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  hp, k, labels = ctx.hp, ctx.k, batch["label"]
  state = carry_tx.get_carry(opt_state, ReconState)
  stage, m, boosting = schedule(state.epoch, k, hp.boost_epochs, hp.rectify_epochs)
  boosting = jnp.logical_and(boosting, active)

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    u = ctx.model.apply({"params": p}, tuple(feats), method="unimodal_logits")
    ce = shapley.cross_entropy(logits.astype(jnp.float32), labels).mean()
    boost = boosting_loss(u, labels, m, ce_weight=hp.ce_weight, recon_weight=hp.recon_weight)
    consolidate = consolidation_loss(u, m, (m - 1) % k, grad=hp.consolidation_grad)
    boost = boost + jnp.where(stage > 0, hp.consolidation, 0.0) * consolidate
    loss = jnp.where(boosting, boost, ce)
    return loss, branches.Objective(logits, stats, True, (ce, consolidate))

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  ce, consolidate = out.extra
  learner = jnp.where(boosting, jax.nn.one_hot(m, k), jnp.zeros((k,))).astype(jnp.float32)
  metrics = dict(out.metrics, ce=ce, consolidation=consolidate)
  return StepOutput(out.grads, {"carry": state._replace(learner=learner),
                               "keep": keep_tree(params, m, boosting)}, out.batch_stats, metrics)


def new_phase(epoch: int, k: int, boost_epochs: int, rectify_epochs: int) -> bool:
  """Whether epoch ``epoch + 1`` starts a phase (boosting or rectification) of its own."""
  a = schedule(epoch, k, boost_epochs, rectify_epochs)
  b = schedule(epoch + 1, k, boost_epochs, rectify_epochs)
  return (a[0], bool(a[2])) != (b[0], bool(b[2]))


def reset_moments(opt_state):
  """The optimiser state with every floating-point buffer of the base optimiser zeroed
  (momentum, Adam's moments; step counts and the schedule kept): a fresh optimiser, as the
  authors build one per phase. The carried :class:`ReconState` is kept."""
  def zero(s):
    if isinstance(s, carry_tx.CarryState) and isinstance(s.carry, ReconState):
      inner = jax.tree.map(lambda x: np.zeros_like(x) if np.issubdtype(np.asarray(x).dtype,
                                                                        np.floating) else x,
                           s.inner)
      return s._replace(inner=inner)
    return s
  return jax.tree.map(zero, opt_state, is_leaf=lambda s: isinstance(s, carry_tx.CarryState))


def epoch_end(ctx, state, epoch, evaluate):
  del evaluate
  hp = ctx.hp
  advance = lambda s: s._replace(epoch=(s.epoch + 1).astype(s.epoch.dtype))  # noqa: E731
  opt_state = carry_tx.replace_carry(state.opt_state, ReconState, advance)
  if hp.reset_optimizer and new_phase(epoch, ctx.k, hp.boost_epochs, hp.rectify_epochs):
    opt_state = reset_moments(opt_state)
  return state.replace(opt_state=opt_state)


METHOD = Method(name="reconboost", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("learner",), epoch_end=epoch_end)
