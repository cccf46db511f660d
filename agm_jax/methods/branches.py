"""The training forward of the methods that need per-modality branches and a late-fusion head
(OGM-GE, OGM-GE-RA, OGM, OPM): :func:`late_step`.

Encoders once, an optional change of their features (OPM's drop), the fusion head, the
cross-entropy gradient, and the late-fusion heads' uni-modal logits ``W_m z_m + b/k``
(``MultimodalClassifier.unimodal_logits``). The train-line ``acc/<m>`` and ``mono_ce/<m>`` are
those of the Shapley responses of the (undropped) features under ``stop_gradient``, with the
masked passes run as the run's ``subsets`` settings say (only the fusion head runs per
subset), so the train lines mean the same as every other method's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods.base import inputs_of, shapley_metrics


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
  model, inputs, labels = ctx.model, inputs_of(batch), batch["label"]
  dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
  full_key = subsets.pass_key(dropout_key, 2**ctx.k - 1)   # as subsets.subset_forward's

  def loss_fn(p):
    feats, stats = subsets.apply(model, p, batch_stats, inputs, train=True, method="encode",
                                 update=True, dropout_key=full_key)
    feats = tuple(feats)
    unimodal = model.apply({"params": jax.lax.stop_gradient(p)}, jax.lax.stop_gradient(feats),
                           method="unimodal_logits")
    used, weight = feature_fn(feats, unimodal) if feature_fn is not None else (feats, None)
    (logits, _), stats = subsets.apply(model, p, stats, used, train=True, method="fuse",
                                       update=True, dropout_key=full_key)
    ce = shapley.cross_entropy(logits, labels)
    if weight is None:
      loss = ce.mean()
    else:
      loss = (ce * weight).sum() / jnp.maximum(weight.sum(), 1.0)
    return loss, (logits.astype(jnp.float32), feats, stats, unimodal, weight)

  (loss, (logits, feats, stats, unimodal, weight)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params)
  p0 = jax.lax.stop_gradient(params)
  feats = jax.lax.stop_gradient(feats)
  masked = subsets.masked_logits(
      model, p0, stats, inputs, feats, ctx.modalities, train=True,
      masked_train=subsets.masked_train_mode(True, ctx.subsets.bn,
                                             stats or subsets.stochastic(model)),
      pad=ctx.subsets.pad, key=rng, dropout_key=dropout_key)
  if feature_fn is None:   # the training forward already ran the head on these features
    full = logits.astype(masked.dtype)
  else:
    (full, _), _ = subsets.apply(model, p0, stats, feats, train=True, method="fuse",
                                 dropout_key=full_key)
  v = jax.lax.stop_gradient(jnp.concatenate([masked, full[None]], 0))
  return LateStep(grads, unimodal.astype(jnp.float32), stats,
                  shapley_metrics(v, loss, logits, labels, ctx.modalities), weight)
