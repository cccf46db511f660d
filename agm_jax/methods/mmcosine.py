"""MMCosine: multi-modal cosine loss (Xu, Feng, Zhang, Hu, "MMCosine: Multi-Modal Cosine Loss
Towards Balanced Audio-Visual Fine-Grained Learning", ICASSP 2023, arXiv 2303.05338; authors'
code GeWu-Lab/MMCosine_ICASSP23 ``main_CD.py``; BalanceBenchmark
``balancemm/trainer/MMCosine_trainer.py``).

Each modality's logits are a scaled cosine similarity between its L2-normalised features and
the L2-normalised class weights of its block of the late-fusion layer, without bias, and the
fused logits their sum::

    logits_m = s * (z_m / ||z_m||) @ (W_m / ||W_m||_col),    logits = sum_m logits_m

trained with the cross-entropy of ``logits``, and scored with the same logits at evaluation
(agm-jax and BalanceBenchmark, ``MMCosine_trainer.py:225-233``). ``W_m`` (D_m, K)
is the late head's weight block of modality m, read through the model's own uni-modal logits
(``W_m z + b_m`` is linear in ``z``: the head applied to the identity minus the head applied
to zero), so the method needs a late-fusion head (sum or concat) and no change to the model.
The train and eval lines' subset logits ``V[S]`` (``acc/<m>``, ``subset_acc/…``) are those
of the same cosine head with every absent modality's encoder run on its pad, as the run's
``subsets`` settings say (``subsets.masked_logits`` with the method's head), so they mean
what every other method's mean. Any k >= 2.

The authors' evaluation differs: their ``valid()`` (``main_CD.py:181-196``) computes the cosine
logits only for the uni-modal accuracies (``:185-189``) and scores the fused prediction with
the model's own output ``out`` (``:181``, ``:196``), for the default concat head the plain
linear layer ``W [z_a; z_v] + b`` on the unnormalised features and weights. Its bias never
trains (the training loss, ``:113-118``, ``:141``, reads only the weight: the bias gets no
gradient, so SGD leaves it at its initial value). The class ranking of ``W [z_a; z_v] + b``
is not that of the cosine logits (feature and class-weight norms differ per example and
class), so the fused accuracies can differ; agm-jax uses the cosine logits, the classifier
the method trains.

Not reproduced: the NCE term of the authors' supplementary material (``--lam``, off by
default there).

Config section ``mmcosine``: ``scaling`` ``s`` (10, the authors' ``--scaling`` default and
README command; BalanceBenchmark 15).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods.base import (
  EvalOutput,
  Method,
  StepOutput,
  check_late_fusion,
  default_tx,
  from_section,
  inputs_of,
  shapley_metrics,
)

NORM_EPS = 1e-12   # torch.nn.functional.normalize's eps


@dataclasses.dataclass(frozen=True)
class HParams:
  scaling: float

  def __post_init__(self):
    if self.scaling <= 0:
      raise ValueError(f"scaling must be > 0, got {self.scaling}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "mmcosine")
  return default_tx(ctx, base)


def normalize(x: jax.Array, axis: int) -> jax.Array:
  """``x / max(||x||, eps)`` along ``axis`` (``F.normalize``)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, NORM_EPS)


def class_weights(model, params, feature_dims) -> tuple[jax.Array, ...]:
  """Each modality's ``(D_m, K)`` weight block of the late head: ``unimodal_logits`` of the
  identity (modality m) minus that of zero features."""
  out = []
  for m, d in enumerate(feature_dims):
    probe = tuple(jnp.eye(d, dtype=jnp.float32) if i == m else jnp.zeros((d, e), jnp.float32)
                  for i, e in enumerate(feature_dims))
    zero = tuple(jnp.zeros((1, e), jnp.float32) for e in feature_dims)
    uni = model.apply({"params": params}, probe, method="unimodal_logits")[m]
    bias = model.apply({"params": params}, zero, method="unimodal_logits")[m]
    out.append(uni - bias)
  return tuple(out)


def cosine_logits(feats, weights, scaling: float) -> jax.Array:
  """``(k, B, K)``: ``s * normalize(z_m) @ normalize(W_m, columns)`` per modality."""
  return jnp.stack([scaling * normalize(f.astype(jnp.float32), -1) @ normalize(w, 0)
                    for f, w in zip(feats, weights)])


def _features(ctx, params, batch_stats, batch, *, train: bool, dropout_key=None):
  feats, stats = subsets.apply(ctx.model, params, batch_stats, inputs_of(batch), train=train,
                               method="encode", update=True, dropout_key=dropout_key)
  return tuple(feats), stats


def _head(ctx, params, feats):
  """``features -> (k, B, K)`` cosine logits with the class weights of ``params``."""
  weights = class_weights(ctx.model, params, tuple(int(f.shape[-1]) for f in feats))
  return lambda f: cosine_logits(f, weights, ctx.hp.scaling)


def _subsets(ctx, params, stats, batch, feats, full, *, train: bool, pad: str, key,
             dropout_key=None):
  """``V`` ``(2**k, B, K)``: the masked subsets with every absent modality's encoder on its
  pad (as the run's ``subsets`` settings say in training, zeros in evaluation, as every
  method's lines), then ``full``."""
  head = _head(ctx, params, feats)
  masked = subsets.masked_logits(
      ctx.model, params, stats, inputs_of(batch), feats, ctx.modalities, train=train,
      masked_train=subsets.masked_train_mode(train, ctx.subsets.bn,
                                             stats or subsets.stochastic(ctx.model)),
      pad=pad, key=key, dropout_key=dropout_key, head=lambda f: head(f).sum(0))
  return jnp.concatenate([masked, full[None].astype(masked.dtype)], 0)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  labels = batch["label"]
  dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
  full_key = subsets.pass_key(dropout_key, 2**ctx.k - 1)

  def loss_fn(p):
    feats, stats = _features(ctx, p, batch_stats, batch, train=True, dropout_key=full_key)
    logits = _head(ctx, p, feats)(feats).sum(0)
    return shapley.cross_entropy(logits, labels).mean(), (logits, feats, stats)

  (loss, (logits, feats, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  p0, feats, logits = jax.lax.stop_gradient((params, feats, logits))
  v = _subsets(ctx, p0, stats, batch, feats, logits, train=True, pad=ctx.subsets.pad,
               key=subsets.device_key(rng, ctx.axis_name), dropout_key=dropout_key)
  metrics = shapley_metrics(jax.lax.stop_gradient(v), loss, logits, labels, ctx.modalities)
  return StepOutput(grads, {}, stats, metrics)


def evaluate(ctx, params, batch_stats, batch) -> EvalOutput:
  feats, _ = _features(ctx, params, batch_stats, batch, train=False)
  logits = _head(ctx, params, feats)(feats).sum(0)
  v = _subsets(ctx, params, batch_stats, batch, feats, logits, train=False, pad="zeros",
               key=None)
  labels = batch["label"]
  phi = shapley.responses(v)
  return EvalOutput(shapley.example_loss(logits, labels), shapley.example_correct(logits, labels),
                    shapley.example_loss(phi, labels[None]), shapley.example_correct(phi, labels),
                    jnp.concatenate([f.astype(jnp.float32) for f in feats], -1), logits,
                    shapley.example_correct(v, labels))


METHOD = Method(name="mmcosine", hparams=hparams, gradients=gradients, make_tx=make_tx,
                evaluate=evaluate, requires_separable=True)


