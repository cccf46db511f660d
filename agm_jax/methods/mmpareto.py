"""MMPareto: multimodal and uni-modal losses combined along a Pareto direction (Wei & Hu,
"MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024;
authors' code GeWu-Lab/MMPareto_ICML2024 ``code/MMPareto.py``; BalanceBenchmark
``balancemm/trainer/MMPareto_trainer.py``).

The losses: the multimodal cross-entropy ``L_mm`` of the fused logits and, per modality, the
uni-modal cross-entropy ``L_m`` of its logits. Their gradients on each modality's encoder
are integrated by ``transforms.pareto.mmpareto`` (the same direction when they agree, the
min-norm Pareto direction when they conflict, the magnitude rule and ``gamma``); every other
parameter gets the plain gradient of ``L_mm + sum_m L_m``. One forward pass, two pullbacks
(``branches.feature_step(num_losses=2)``). Any k >= 2.

The uni-modal logits are those of the late-fusion head's blocks, ``W_m z_m + b/k`` (as
BalanceBenchmark reads them); the authors' models add a separate linear head per modality
(``head_audio``, ``head_video``), which agm-jax's models, knowing nothing of training
methods, do not have. Needs a late-fusion head.

Config section ``mmpareto``: ``gamma`` (1.5: ``code/MMPareto.py``; BalanceBenchmark's
``alpha``), ``start_epoch`` / ``end_epoch`` (outside the window the update is the plain
gradient of ``L_mm + sum_m L_m``). The state logs ``weight/<m>``, the multimodal gradient's
weight on encoder m (1/2 when the two agree), and ``cosine/<m>``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  check_late_fusion,
  from_section,
  unimodal_ce,
)
from agm_jax.transforms import pareto


@dataclasses.dataclass(frozen=True)
class HParams:
  gamma: float
  window: Window

  def __post_init__(self):
    if self.gamma <= 0:
      raise ValueError(f"gamma must be > 0, got {self.gamma}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "mmpareto")
  return optax.chain(pareto.mmpareto(num_modalities=ctx.k, gamma=ctx.hp.gamma), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    uni = ctx.model.apply({"params": p}, feats, method="unimodal_logits")
    l_mm = shapley.cross_entropy(logits, labels).mean()
    l_uni = unimodal_ce(uni, labels)
    return jnp.stack([l_mm, l_uni]), branches.Objective(logits, stats, True)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective, num_losses=2)
  return StepOutput(out.grads, {"active": active}, out.batch_stats, out.metrics)


METHOD = Method(name="mmpareto", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("weight", "cosine"))
