"""G-Blending: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020), online version.

Loss ``w_fused * CE(fused logits) + sum_m w_m * CE(phi^m)``. The uni-modal heads are the
Shapley mono-modal responses ``phi^m`` of the same model (AGM eq. 1-3; ``sum_m phi^m`` is the
fused logits) rather than new parameters, so it works with every fusion that has
per-modality branches. Every ``gblending.super_epoch`` epochs the train and dep
(held-out) losses of each head and of the fused output are measured (eval mode); from two
measurements ``n`` epochs apart, ``O = L_dep - L_train``, ``dG = L_dep(N) - L_dep(N+n)``,
``dO = O(N+n) - O(N)`` and ``w ∝ max(dG, 0) / dO^2``, normalised to sum 1
(``modulation_epoch.gblend_weights``); uniform ``1/(k+1)`` before the first estimate.
The weights live in the ``blend`` transform's state; the gradient is ONE backward pass of the
subset passes with the cotangent of the weighted loss. Config: ``gblending.super_epoch``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import modulation_epoch, shapley
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, inputs_of
from agm_jax.train import forward


def make_tx(config, base, k):
  if int(config.gblending.super_epoch) < 1:
    raise ValueError(f"gblending.super_epoch must be >= 1, got {config.gblending.super_epoch}")
  return optax.chain(modulation_epoch.blend(k), base)


def gradients(ctx, params, batch_stats, batch, rng, active):
  del active
  labels = batch["label"]

  def subsets(p):
    return forward.subset_forward(ctx.model, p, batch_stats, inputs_of(batch), ctx.modalities,
                                  subset_bn=ctx.subset_bn, pad=ctx.pad, key=rng,
                                  grad_masked=True, fast=ctx.fast)

  v, vjp_fn, aux = jax.vjp(subsets, params, has_aux=True)
  k = ctx.k
  phi = shapley.responses(v)
  logits = v[-1].astype(jnp.float32)
  loss, dlogits = jax.value_and_grad(lambda z: shapley.cross_entropy(z, labels).mean())(logits)
  _, dphi = jax.value_and_grad(lambda f: shapley.mono_modal_ce(f, labels).sum())(phi)
  c = jnp.asarray(shapley.coefficients(k))
  full = jnp.zeros((2**k,), jnp.float32).at[-1].set(1.0)

  def backward(w):
    w = jnp.asarray(w, jnp.float32)
    cot = jnp.einsum("m,ms,mbc->sbc", w[:k], c, dphi) + w[k] * full[:, None, None] * dlogits
    return vjp_fn(cot.astype(v.dtype))[0]

  metrics = branches.metrics_of(jax.lax.stop_gradient(v), loss, logits, labels, ctx.modalities)
  return StepOutput(backward, {}, aux.batch_stats, metrics)


def _losses(run, state, split):
  metrics = run.evaluate(state, split)[0]
  return np.asarray([metrics[f"mono_ce/{m}"] for m in run.modalities] + [metrics["loss"]],
                    np.float32)


def epoch_end(run, state, epoch, evals):
  del evals
  if epoch % int(run.config.gblending.super_epoch):
    return state
  train, dep = _losses(run, state, "train"), _losses(run, state, "dep")
  opt_state = branches.update_state(
      state.opt_state, modulation_epoch.BlendState,
      lambda s: modulation_epoch.blend_epoch_update(s, train, dep))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="gblending", gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
