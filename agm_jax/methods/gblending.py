"""G-Blending: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020), online version.

Loss ``w_fused * CE(fused logits) + sum_m w_m * CE(phi^m)``. The uni-modal heads are the
Shapley mono-modal responses ``phi^m`` of the same model (AGM eq. 1-3; ``sum_m phi^m`` is the
fused logits) rather than new parameters, so it works with every fusion that has
per-modality branches. Every ``gblending.super_epoch`` epochs the train and dep
(held-out) losses of each head and of the fused output are measured (eval mode); from two
measurements ``n`` epochs apart, ``O = L_dep - L_train``, ``dG = L_dep(N) - L_dep(N+n)``,
``dO = O(N+n) - O(N)`` and ``w ∝ max(dG, 0) / dO^2``, normalised to sum 1
(``transforms.epoch.gblend_weights``); uniform ``1/(k+1)`` before the first estimate.
The weights live in the ``blend`` transform's state; the gradient is ONE backward pass of the
subset passes with the cotangent of the weighted loss (``base.subset_step``).
Config section ``gblending``: ``super_epoch``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import shapley
from agm_jax.methods.base import (
  Method,
  StepOutput,
  from_section,
  shapley_metrics,
  subset_step,
  update_state,
)
from agm_jax.transforms import epoch as epoch_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  super_epoch: int

  def __post_init__(self):
    if self.super_epoch < 1:
      raise ValueError(f"super_epoch must be >= 1, got {self.super_epoch}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  return optax.chain(epoch_tx.blend(ctx.k), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  labels = batch["label"]
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, rng)
  k = ctx.k
  phi = shapley.responses(v)
  logits = v[-1].astype(jnp.float32)
  loss, dlogits = jax.value_and_grad(lambda z: shapley.cross_entropy(z, labels).mean())(logits)
  _, dphi = jax.value_and_grad(lambda f: shapley.mono_modal_ce(f, labels).sum())(phi)
  c = jnp.asarray(shapley.coefficients(k))
  full = jnp.zeros((2**k,), jnp.float32).at[-1].set(1.0)

  def backward(w):
    w = jnp.asarray(w, jnp.float32)
    return pullback(jnp.einsum("m,ms,mbc->sbc", w[:k], c, dphi)
                    + w[k] * full[:, None, None] * dlogits)

  metrics = shapley_metrics(jax.lax.stop_gradient(v), loss, logits, labels, ctx.modalities)
  return StepOutput(backward, {}, aux.batch_stats, metrics)


def _losses(ctx, evaluate, split):
  metrics = evaluate(split)[0]
  return np.asarray([metrics[f"mono_ce/{m}"] for m in ctx.modalities] + [metrics["loss"]],
                    np.float32)


def epoch_end(ctx, state, epoch, evaluate):
  if epoch % ctx.hp.super_epoch:
    return state
  train, dep = _losses(ctx, evaluate, "train"), _losses(ctx, evaluate, "dep")
  opt_state = update_state(state.opt_state, epoch_tx.BlendState,
                           lambda s: epoch_tx.blend_epoch_update(s, train, dep))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="gblending", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
