"""Shared pieces of the methods that need per-modality branches (OGM-GE, OGM, OPM, …).

* :func:`late_step`: encoders once, an optional change of their features (OPM's drop), the
  fusion head, the cross-entropy gradient, the late-fusion heads' uni-modal logits
  ``W_m z_m + b/k`` (``MultimodalClassifier.unimodal_logits``) and the train-line metrics.
  The metrics' ``acc/<m>`` and ``mono_ce/<m>`` are those of the Shapley responses of the
  (undropped) features under ``stop_gradient`` (only the fusion head runs per subset), so
  the train lines mean the same as every other method's and as the eval lines.
* :func:`check_late_fusion`: the clear error for a fusion without uni-modal logits.
* :func:`update_state`: rebuild one NamedTuple state inside a (chained) optimiser state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods.base import inputs_of
from agm_jax.train import forward

LATE_FUSIONS = ("sum", "concat")


def check_late_fusion(config, method: str) -> None:
  fusion = config.model.fusion
  if fusion not in LATE_FUSIONS:
    raise ValueError(f"method {method!r} needs per-modality logits W_m z_m + b/k from a "
                     f"late-fusion head; fusion {fusion!r} has none (supported fusions: "
                     f"{', '.join(LATE_FUSIONS)})")


def update_state(opt_state: Any, cls: type, fn: Callable[[Any], Any]) -> Any:
  """``opt_state`` with every ``cls`` instance ``s`` replaced by ``fn(s)``."""
  return jax.tree.map(lambda s: fn(s) if isinstance(s, cls) else s, opt_state,
                      is_leaf=lambda s: isinstance(s, cls))


def find_state(opt_state: Any, cls: type) -> Any:
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, cls))
           if isinstance(s, cls)]
  if len(found) != 1:
    raise ValueError(f"expected one {cls.__name__} in the optimiser state, found {len(found)}")
  return found[0]


class LateStep(NamedTuple):
  grads: Any
  unimodal: jax.Array      # (k, B, K) uni-modal logits of the undropped features (no gradient)
  batch_stats: Any
  metrics: dict


def subset_logits(ctx, params, stats, inputs, feats, key) -> jax.Array:
  """``V`` ``(2**k, B, K)`` from per-modality features: the fusion head vmapped over subsets,
  absent modalities replaced by their encoders' output on the pad (train-mode statistics,
  as joint training's metrics)."""
  absent = forward._pad_features(ctx.model, params, stats, inputs, ctx.modalities, train=True,
                                 pad=ctx.pad, key=key)
  masks = jnp.asarray(shapley.subset_masks(ctx.k))

  def one(mask):
    f = tuple(jnp.where(mask[i], feats[i], absent[i]) for i in range(ctx.k))
    (logits, _), _ = forward._apply(ctx.model, params, stats, f, train=True, method="fuse")
    return logits

  return jax.vmap(one)(masks)


def metrics_of(v, loss, logits, labels, modalities) -> dict[str, jax.Array]:
  """Train-line scalars: the training loss, the accuracy of the training logits, and each
  modality's Shapley mono-modal accuracy and cross-entropy."""
  phi = shapley.responses(v)
  ce = shapley.mono_modal_ce(phi, labels)
  acc = shapley.mono_modal_accuracy(phi, labels)
  out = {"loss": loss, "acc": (jnp.argmax(logits, -1) == labels).mean()}
  for i, m in enumerate(modalities):
    out[f"acc/{m}"] = acc[i]
    out[f"mono_ce/{m}"] = ce[i]
  return out


def late_step(ctx, params, batch_stats, batch, rng, *,
              feature_fn: Callable | None = None) -> LateStep:
  """Cross-entropy gradient of a separable model; ``feature_fn(feats) -> (feats, weight)``
  may change the features the fusion head sees in the training forward (``weight`` (B,)
  weights the per-example losses, or None)."""
  model, inputs, labels = ctx.model, inputs_of(batch), batch["label"]

  def loss_fn(p):
    feats, stats = forward._apply(model, p, batch_stats, inputs, train=True, method="encode",
                                  update=True)
    feats = tuple(feats)
    used, weight = feature_fn(feats) if feature_fn is not None else (feats, None)
    (logits, _), stats = forward._apply(model, p, stats, used, train=True, method="fuse",
                                        update=True)
    ce = shapley.cross_entropy(logits, labels)
    if weight is None:
      loss = ce.mean()
    else:
      loss = (ce * weight).sum() / jnp.maximum(weight.sum(), 1.0)
    return loss, (logits.astype(jnp.float32), feats, stats)

  (loss, (logits, feats, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  p0 = jax.lax.stop_gradient(params)
  feats = jax.lax.stop_gradient(feats)
  unimodal = model.apply({"params": p0}, feats, method="unimodal_logits")
  v = jax.lax.stop_gradient(subset_logits(ctx, p0, stats, inputs, feats, rng))
  return LateStep(grads, unimodal.astype(jnp.float32), stats,
                  metrics_of(v, loss, logits, labels, ctx.modalities))
