"""AMCo: Adaptive Mask Co-optimization (Zhou, Liang, Zheng, Xuan, Kumada, "Adaptive Mask
Co-optimization for Modal Dependence in Multimodal Learning", ICASSP 2023; BalanceBenchmark
``balancemm/trainer/AMCo_trainer.py`` and the ``AMCo`` model of its
``balancemm/models/avclassify_model.py``).

Sources: the paper's text was not reachable from here (only its abstract: an adaptive mask
"making dependent modalities harder to be learned" and a co-optimisation that "preserve[s]
the performance of models on dependent modalities"), and we found no code by the authors;
what follows is BalanceBenchmark's reading, with the choices it leaves open named.

Per step, inside the window (``start_epoch`` … ``end_epoch``):

* **Dependence.** With the late head's uni-modal logits ``u_m = W_m z_m + b/k`` of the step's
  (masked) features, concatenated over modalities and passed through one softmax over
  ``k K`` entries, modality m's share is ``share_m = mean_i sum_{c} softmax([u_1 … u_k])_i[m, c]``
  (the shares sum to 1); m is *dependent* when ``share_m > sigma``. The flags are computed at
  one step and used at the next (the trainer's ``dependent_modality``), so they live in the
  optimiser state (:class:`AMCoState`); all false at the start. BalanceBenchmark resets them
  every epoch (``AMCo_trainer.py:61-63``); agm-jax keeps them, the same: ``p_t = 0`` at an
  epoch's first step, whose mask is empty either way.
* **Adaptive mask.** ``p_t = sin(pi/2 * min(eps, l_t) / eps)`` with ``l_t = j * e / 10`` at the
  ``j``-th step (from 0) of epoch ``e`` (BalanceBenchmark's ``l_t``, reset every epoch): a
  random ``floor(p_t * n)`` of the dependent modality's ``n`` units are zeroed, one draw per
  step for the whole batch. ``target="features"`` (default; the issue's and the abstract's
  reading) masks the dependent modality's encoder features before the fusion head (any
  fusion of a separable model sees them); ``target="logits"`` (BalanceBenchmark's reading)
  masks ``floor(p_t K)`` classes of its uni-modal logits, the fused logits being ``sum_m u_m``
  (BalanceBenchmark's model, ``avclassify_model.py:376-378``, whose extra ``linear_star``
  layer after the sum we do not add).
* **Co-optimisation** (:func:`co_loss`). ``L = CE(fused) + sum_m CE(u_m)``, each modality
  trained on its own uni-modal loss as well. Which ``u_m``: ``target="features"`` those of the
  unmasked features (the abstract's "preserve the performance of models on dependent
  modalities": the dependent modality's own loss is not masked); ``target="logits"`` the
  masked logits the fused loss sees, as BalanceBenchmark (``AMCo_trainer.py:143-145`` reads
  ``unimodal_result``, masked at ``avclassify_model.py:376-377``): at mask rate 1 the
  dependent modality's own loss is the constant ``log K``, with no gradient.

Outside the window: ``L = CE(fused)``, no mask, the flags kept. Needs a late-fusion head (the
uni-modal logits). Any k >= 2 (with k > 2 and ``sigma >= 1/2`` at most one modality is
dependent). Config section ``amco``: ``sigma`` (0.5), ``eps`` (0.3), ``target``,
``start_epoch``, ``end_epoch`` (BalanceBenchmark's ``trainer_config.yaml``; its ``alpha``, ``U``
and ``method`` are not read by its trainer). The state logs ``dependent/<m>``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  check_late_fusion,
  from_section,
  one_of,
  unimodal_ce,
)
from agm_jax.transforms import carry as carry_tx

TARGETS = ("features", "logits")


@dataclasses.dataclass(frozen=True)
class HParams:
  sigma: float
  eps: float
  target: str
  window: Window

  def __post_init__(self):
    if not 0.0 < self.sigma < 1.0:
      raise ValueError(f"sigma must be in (0, 1), got {self.sigma}")
    if self.eps <= 0:
      raise ValueError(f"eps must be > 0, got {self.eps}")
    one_of("target", self.target, TARGETS)


def hparams(section) -> HParams:
  return from_section(HParams, section)


class AMCoState(NamedTuple):
  dependent: jax.Array   # (k,) 1.0 where the modality was found dependent at the last step
  step: jax.Array        # () int32: steps so far in this epoch
  epoch: jax.Array       # () int32: epochs finished


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "amco")
  state = AMCoState(jnp.zeros((ctx.k,), jnp.float32), jnp.zeros((), jnp.int32),
                    jnp.zeros((), jnp.int32))
  return carry_tx.with_carry(base, lambda params: state, name="amco")


def mask_rate(step, epoch, eps: float) -> jax.Array:
  """``p_t = sin(pi/2 * min(eps, l_t) / eps)``, ``l_t = step * epoch / 10``."""
  l_t = jnp.asarray(step, jnp.float32) * jnp.asarray(epoch, jnp.float32) / 10.0
  return jnp.sin(jnp.pi / 2 * jnp.minimum(eps, l_t) / eps)


def unit_mask(key, n: int, rate) -> jax.Array:
  """``(n,)`` float: ``floor(rate * n)`` random entries 0, the others 1."""
  dropped = jnp.floor(rate * n).astype(jnp.int32)
  rank = jnp.argsort(jax.random.uniform(key, (n,)))
  return (rank >= dropped).astype(jnp.float32)


def shares(unimodal: jax.Array) -> jax.Array:
  """``(k,)``: each modality's mean share of one softmax over the concatenated uni-modal
  logits ``(k, B, K)``."""
  k, b, c = unimodal.shape
  joint = jax.nn.softmax(jnp.transpose(unimodal, (1, 0, 2)).reshape(b, k * c), axis=-1)
  return joint.reshape(b, k, c).sum(-1).mean(0)


# The co-optimisation term ``sum_m mean_i CE(u_m)_i`` (``AMCo_trainer.py:143-145``: one
# batch-mean CE per modality).
co_loss = unimodal_ce


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  hp, labels = ctx.hp, batch["label"]
  state = carry_tx.get_carry(opt_state, AMCoState)
  mask_key, pass_key = jax.random.split(rng)
  rate = mask_rate(state.step, state.epoch, hp.eps)
  on = active & (state.dependent > 0)                      # (k,) mask this modality
  keys = jax.random.split(mask_key, ctx.k)

  def unimodal(p, feats):
    return ctx.model.apply({"params": p}, tuple(feats), method="unimodal_logits")

  def objective(p, feats, fuse):
    if hp.target == "features":
      used = tuple(jnp.where(on[m], f * unit_mask(keys[m], f.shape[-1], rate).astype(f.dtype), f)
                   for m, f in enumerate(feats))
      logits, stats = fuse(used)
      seen = unimodal(p, used)
    else:
      uni = unimodal(p, feats)
      seen = jnp.stack([jnp.where(on[m], uni[m] * unit_mask(keys[m], uni.shape[-1], rate),
                                  uni[m]) for m in range(ctx.k)])
      _, stats = fuse(feats)   # the head's statistics (a late head: sum_m u_m unmasked)
      logits = seen.sum(0)
    ce = shapley.cross_entropy(logits, labels).mean()
    own = co_loss(seen if hp.target == "logits" else unimodal(p, feats), labels)
    loss = ce + jnp.where(active, own, 0.0)
    share = shares(jax.lax.stop_gradient(seen).astype(jnp.float32))
    return loss, branches.Objective(logits, stats, False, share)

  out = branches.feature_step(ctx, params, batch_stats, batch, pass_key, objective)
  share = out.extra
  if ctx.axis_name is not None:
    share = jax.lax.pmean(share, ctx.axis_name)
  dependent = jnp.where(active, (share > hp.sigma).astype(jnp.float32), state.dependent)
  new = AMCoState(dependent, state.step + 1, state.epoch)
  return StepOutput(out.grads, {"carry": new}, out.batch_stats, out.metrics)


def epoch_end(ctx, state, epoch, evaluate):
  del ctx, epoch, evaluate
  opt_state = carry_tx.replace_carry(
      state.opt_state, AMCoState, lambda s: s._replace(step=jnp.zeros_like(s.step),
                                                       epoch=s.epoch + 1))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="amco", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("dependent",), epoch_end=epoch_end)
