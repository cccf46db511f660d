"""PMR: Prototypical Modal Rebalance (Fan, Xu, Wang, Wang, Guo, "PMR: Prototypical Modal
Rebalance for Multimodal Learning", CVPR 2023, arXiv 2211.07089; authors' code
fanyunfeng-bit/Modal-Imbalance-PMR ``main_Prototype_grad.py``; BalanceBenchmark
``balancemm/trainer/PMR_trainer.py``).

Each modality m has one prototype per class, ``c^m_y`` (the class mean of m's encoder
features), and from it a non-parametric classifier: ``s^m_i = softmax_y(-||z^m_i - c^m_y||)``
(Euclidean distance, as the code's ``EU_dist``). Per step, with ``score_m = sum_i s^m_i[y_i]``
(without gradient), every modality whose score is below the best modality's gets the
prototypical cross-entropy (PCE) ``CE(-||z^m - c^m||, y)`` with weight ``alpha`` (the
authors' code: for two modalities, PCE on audio when ``score_a / score_v < 1``, on visual when
``> 1``, none on a tie; for k > 2 every modality but the best, our generalisation)::

    L = CE(fused logits) + alpha * sum_{m slower than the best} PCE^m
        - entropy_weight * H(s^{best})      (first ``entropy_epochs`` epochs; see below)

The PCE gradient reaches only modality m's encoder (the prototypes carry none). Inside the
window only (``start_epoch``/``end_epoch``); outside it the loss is the plain CE. Any fusion
of a separable model (per-modality encoders), any k >= 2.

The window: the authors' ``main_Prototype_grad.py:47-48`` defaults ``--modulation_starts 0
--modulation_ends 100``, and ``:156`` applies PCE when ``modulation_starts <= epoch <=
modulation_ends`` with ``epoch`` from ``range(args.epochs)`` (``:541``), i.e. counted from 0
and inclusive, as agm-jax's :class:`Window`: the default is ``start_epoch=0, end_epoch=100``
(epochs 0 … 100, the plain CE from epoch 101). Their ``bash.sh`` ``main_Prototype_grad.py``
commands end at 100 (lines 58, 130), 70 (lines 134-173, 217-240) or 60 (CG-MNIST, 185-187);
BalanceBenchmark's ``trainer_config.yaml`` at 80 (``modulation_ends``, compared the same way,
``PMR_trainer.py:131``).

Prototypes (in the optimiser state, :class:`PMRState`, checkpointed): the code recomputes them
after every epoch from the first tenth of the training batches in eval mode, and mixes them
with the previous ones, ``c <- (1 - momentum) c_new + momentum c_old``, starting from those of
the initial model. agm-jax accumulates, during each epoch, the class sums of the training
steps' own features (train mode, every batch, no extra pass) and forms ``c_new`` from them at
the epoch's end with the same momentum; during the first epoch, before any prototype exists,
the steps use the running class means of that epoch's features so far. A class not yet seen
keeps its old prototype (zero at first).

The paper also adds a prototype-based entropy regulariser on the dominant modality early in
training (its abstract: "a prototype-based entropy regularization term during the early
training stage to prevent premature convergence"); neither the authors' code nor
BalanceBenchmark has it. ``entropy_weight > 0`` adds ``-entropy_weight * mean_i H(s^{best}_i)``
(maximising the entropy of the best modality's prototype probabilities) during the first
``entropy_epochs`` epochs; the default 0 follows the code.

Config section ``pmr``: ``alpha`` (1.0, the code's default; BalanceBenchmark 0.6),
``momentum`` (0.2, the code's ``momentum_coef``; BalanceBenchmark 0.5), ``entropy_weight``
(0.0), ``entropy_epochs``, ``start_epoch`` (0), ``end_epoch`` (100: the code's default,
above). The state logs ``coeff/<m>``, the PCE weight of each modality at the last step.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, from_section
from agm_jax.transforms import carry as carry_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  alpha: float
  momentum: float
  entropy_weight: float
  entropy_epochs: int
  window: Window

  def __post_init__(self):
    if self.alpha < 0:
      raise ValueError(f"alpha must be >= 0, got {self.alpha}")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
    if self.entropy_weight < 0:
      raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}")
    if self.entropy_epochs < 0:
      raise ValueError(f"entropy_epochs must be >= 0, got {self.entropy_epochs}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


class PMRState(NamedTuple):
  prototypes: tuple      # per modality (C, D_m): the prototypes the steps use
  sums: tuple            # per modality (C, D_m): this epoch's class sums of the features
  counts: jax.Array      # (C,) this epoch's examples per class
  ready: jax.Array       # () bool: whether ``prototypes`` holds an epoch's prototypes yet
  epoch: jax.Array       # () int32: the epochs finished
  coeff: jax.Array       # (k,) the PCE weight of each modality at the last step


def init_state(num_classes: int, feature_dims) -> PMRState:
  zeros = tuple(jnp.zeros((num_classes, d), jnp.float32) for d in feature_dims)
  return PMRState(zeros, zeros, jnp.zeros((num_classes,), jnp.float32),
                  jnp.zeros((), bool), jnp.zeros((), jnp.int32),
                  jnp.zeros((len(feature_dims),), jnp.float32))


def make_tx(ctx, base):
  if not ctx.feature_dims or not ctx.num_classes:
    raise ValueError("pmr needs the encoders' feature widths and the number of classes "
                     "(Context.feature_dims, Context.num_classes)")
  state = init_state(ctx.num_classes, ctx.feature_dims)
  return carry_tx.with_carry(base, lambda params: state, name="pmr")


def distances(z: jax.Array, prototypes: jax.Array) -> jax.Array:
  """``(B, C)`` Euclidean distances of features ``(B, D)`` to prototypes ``(C, D)`` (a safe
  square root: finite gradient at distance 0)."""
  sq = jnp.sum(jnp.square(z[:, None, :] - prototypes[None]), axis=-1)
  return jnp.sqrt(jnp.maximum(sq, 1e-12))


def scores(neg_dist: jax.Array, labels: jax.Array) -> jax.Array:
  """``(k,)``: per modality ``sum_i softmax(-d)_i[y_i]`` of ``neg_dist`` ``(k, B, C)``."""
  probs = jax.nn.softmax(neg_dist, axis=-1)
  return jnp.take_along_axis(probs, labels[None, :, None], axis=-1)[..., 0].sum(-1)


def coefficients(score: jax.Array, alpha: float) -> jax.Array:
  """``(k,)`` PCE weights: ``alpha`` for every modality whose score is below the best one."""
  return jnp.where(score < score.max(), alpha, 0.0).astype(jnp.float32)


def entropy(neg_dist: jax.Array) -> jax.Array:
  """``(B,)`` the entropy of each row's prototype probabilities ``softmax(-d)``."""
  logp = jax.nn.log_softmax(neg_dist, axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)


def class_sums(feats, labels, num_classes: int, axis_name=None):
  """``(per modality (C, D_m) class sums of the features, (C,) counts)`` of a batch (summed
  over ``axis_name`` under pmap)."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  sums = tuple(onehot.T @ f.astype(jnp.float32) for f in feats)
  counts = onehot.sum(0)
  if axis_name is not None:
    sums, counts = jax.lax.psum((sums, counts), axis_name)
  return sums, counts


def used_prototypes(state: PMRState, sums, counts):
  """The prototypes a step uses: the state's, or before the first epoch ended the running
  class means of this epoch's features so far (``sums``, ``counts`` include this batch)."""
  def one(proto, s):
    running = s / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(state.ready, proto, running)
  return tuple(one(p, s) for p, s in zip(state.prototypes, sums))


def epoch_update(state: PMRState, momentum: float) -> PMRState:
  """The end of an epoch: the epoch's class means mixed with the previous prototypes
  (``(1 - momentum) new + momentum old``; the first epoch's means as they are; a class not
  seen keeps its prototype), the sums reset."""
  seen = (state.counts > 0)[:, None]

  def one(proto, s):
    new = s / jnp.maximum(state.counts, 1.0)[:, None]
    mixed = jnp.where(state.ready, (1.0 - momentum) * new + momentum * proto, new)
    return jnp.where(seen, mixed, proto)

  zeros = tuple(jnp.zeros_like(s) for s in state.sums)
  return state._replace(prototypes=tuple(one(p, s) for p, s in zip(state.prototypes,
                                                                    state.sums)),
                        sums=zeros, counts=jnp.zeros_like(state.counts),
                        ready=jnp.ones((), bool), epoch=state.epoch + 1)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  hp, labels = ctx.hp, batch["label"]
  state = carry_tx.get_carry(opt_state, PMRState)

  def objective(p, feats, fuse):
    del p
    logits, stats = fuse(feats)
    ce = shapley.cross_entropy(logits, labels).mean()
    plain = jax.lax.stop_gradient(feats)
    batch_sums, batch_counts = class_sums(plain, labels, ctx.num_classes, ctx.axis_name)
    sums = tuple(a + b for a, b in zip(state.sums, batch_sums))
    counts = state.counts + batch_counts
    protos = used_prototypes(state, sums, counts)
    neg = jnp.stack([-distances(f.astype(jnp.float32), c) for f, c in zip(feats, protos)])
    score = jax.lax.stop_gradient(scores(neg, labels))
    if ctx.axis_name is not None:
      score = jax.lax.psum(score, ctx.axis_name)
    coeff = jnp.where(active, coefficients(score, hp.alpha), 0.0)
    pce = shapley.cross_entropy(neg, labels[None]).mean(-1)          # (k,)
    loss = ce + (coeff * pce).sum()
    if hp.entropy_weight > 0:
      best = jnp.argmax(score)
      early = active & (state.epoch < hp.entropy_epochs)
      reg = -hp.entropy_weight * entropy(neg[best]).mean()
      loss = loss + jnp.where(early, reg, 0.0)
    new = state._replace(sums=sums, counts=counts, coeff=coeff)
    return loss, branches.Objective(logits, stats, True, new)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  return StepOutput(out.grads, {"carry": out.extra}, out.batch_stats, out.metrics)


def epoch_end(ctx, state, epoch, evaluate):
  del epoch, evaluate
  opt_state = carry_tx.replace_carry(state.opt_state, PMRState,
                                     lambda s: epoch_update(s, ctx.hp.momentum))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="pmr", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
