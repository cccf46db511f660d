"""The training forward of the methods that work on each modality's encoder features: the
per-modality branches of a separable model (OGM-GE, OGM-GE-RA, OGM, OPM, ModDrop, feature
dropout: :func:`late_step`; PMR, MMCosine, AMCo: :func:`feature_step` with their own objective).

Encoders once (train mode), the method's objective on their features (it may change the
features the fusion head sees, add losses on the features or on the late-fusion heads'
uni-modal logits ``W_m z_m + b/k``), one backward pass. The train-line ``acc/<m>`` and
``mono_ce/<m>`` are those of the Shapley responses of the (unchanged) features under
``stop_gradient``, with the masked passes run as the run's ``subsets`` settings say (only the
fusion head runs per subset), so the train lines mean the same as every other method's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods.base import inputs_of, shapley_metrics


class Objective(NamedTuple):
  """What a :func:`feature_step` objective returns besides its loss."""
  logits: jax.Array        # (B, K) the training logits (the train line's ``acc``)
  batch_stats: Any         # the statistics after the fusion head's pass (``fuse``'s)
  same_features: bool      # whether ``logits`` are the head on the unchanged features
  extra: Any = None        # anything else the method needs after the step (no gradient)


class FeatureStep(NamedTuple):
  grads: Any
  loss: jax.Array
  feats: tuple             # the encoders' features (no gradient)
  batch_stats: Any
  metrics: dict
  extra: Any


def feature_step(ctx, params, batch_stats, batch, rng, objective: Callable[..., tuple], *,
                 num_losses: int = 0) -> FeatureStep:
  """The gradient of ``objective(p, feats, fuse) -> (loss, Objective)``: ``feats`` the
  encoders' train-mode features of the batch (a tuple in modality order, with gradient),
  ``fuse(features) -> (logits, batch_stats)`` the fusion head's train-mode pass. With
  ``num_losses=n`` the objective returns ``n`` losses ``(n,)`` and ``grads`` has each one's
  gradient on a leading axis of ``n`` (one forward pass, ``n`` pullbacks; MMPareto); the
  train line's ``loss`` is the first."""
  model, inputs, labels = ctx.model, inputs_of(batch), batch["label"]
  dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
  full_key = subsets.pass_key(dropout_key, 2**ctx.k - 1)   # as subsets.subset_forward's

  def loss_fn(p):
    feats, stats = subsets.apply(model, p, batch_stats, inputs, train=True, method="encode",
                                 update=True, dropout_key=full_key)
    feats = tuple(feats)

    def fuse(features):
      (logits, _), new = subsets.apply(model, p, stats, tuple(features), train=True,
                                       method="fuse", update=True, dropout_key=full_key)
      return logits, new

    loss, out = objective(p, feats, fuse)
    return loss, (feats, out)

  if num_losses:
    loss, pullback, (feats, out) = jax.vjp(loss_fn, params, has_aux=True)
    grads = jax.vmap(lambda c: pullback(c)[0])(jnp.eye(num_losses, dtype=loss.dtype))
    loss = loss[0]
  else:
    (loss, (feats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  p0 = jax.lax.stop_gradient(params)
  feats = jax.lax.stop_gradient(feats)
  stats = out.batch_stats
  masked = subsets.masked_logits(
      model, p0, stats, inputs, feats, ctx.modalities, train=True,
      masked_train=subsets.masked_train_mode(True, ctx.subsets.bn,
                                             stats or subsets.stochastic(model)),
      pad=ctx.subsets.pad, key=subsets.device_key(rng, ctx.axis_name), dropout_key=dropout_key)
  if out.same_features:   # the training forward already ran the head on these features
    full = out.logits.astype(masked.dtype)
  else:
    (full, _), _ = subsets.apply(model, p0, stats, feats, train=True, method="fuse",
                                 dropout_key=full_key)
  v = jax.lax.stop_gradient(jnp.concatenate([masked, full[None]], 0))
  logits = jax.lax.stop_gradient(out.logits).astype(jnp.float32)
  metrics = shapley_metrics(v, loss, logits, labels, ctx.modalities)
  return FeatureStep(grads, loss, feats, stats, metrics, jax.lax.stop_gradient(out.extra))


class LateStep(NamedTuple):
  grads: Any
  unimodal: jax.Array      # (k, B, K) uni-modal logits of the undropped features (no gradient)
  batch_stats: Any
  metrics: dict
  weight: jax.Array | None  # (B,) the per-example loss weights feature_fn gave (None: none)


def late_step(ctx, params, batch_stats, batch, rng, *,
              feature_fn: Callable | None = None) -> LateStep:
  """Cross-entropy gradient of a separable model; ``feature_fn(feats, unimodal) ->
  (feats, weight)`` may change the features the fusion head sees in the training forward
  (``unimodal``: the uni-modal logits of the undropped features, without gradient, computed
  once per step; ``weight`` (B,) weights the per-example losses, or None)."""
  labels = batch["label"]

  def objective(p, feats, fuse):
    unimodal = ctx.model.apply({"params": jax.lax.stop_gradient(p)},
                               jax.lax.stop_gradient(feats), method="unimodal_logits")
    used, weight = feature_fn(feats, unimodal) if feature_fn is not None else (feats, None)
    logits, stats = fuse(used)
    ce = shapley.cross_entropy(logits, labels)
    if weight is None:
      loss = ce.mean()
    else:
      loss = (ce * weight).sum() / jnp.maximum(weight.sum(), 1.0)
    return loss, Objective(logits, stats, feature_fn is None, (unimodal, weight))

  out = feature_step(ctx, params, batch_stats, batch, rng, objective)
  unimodal, weight = out.extra
  return LateStep(out.grads, unimodal.astype(jnp.float32), out.batch_stats, out.metrics, weight)
