"""Joint training: plain cross-entropy of the fused logits (the papers' "Joint" baseline).

The masked subsets are still evaluated (as the ``subsets`` section says, under
``stop_gradient``) so the train lines carry each modality's mono-modal accuracy and
cross-entropy; on the fast path that costs only the fusion head on each subset (plus one
eval-mode encoder pass under ``subsets.bn="eval"`` for a model with BatchNorm).
Config section ``joint``: empty.
"""

from __future__ import annotations

import jax.numpy as jnp

from agm_jax.methods.base import Method, StepOutput, aux_metrics, shapley_step, train_metrics


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  fwd, backward = shapley_step(ctx, params, batch_stats, batch, rng, grad_masked=False)
  grads = backward(jnp.ones((ctx.k,), jnp.float32))
  metrics = train_metrics(fwd.loss, fwd.logits, fwd.mono_ce, fwd.mono_acc, batch["label"],
                          ctx.modalities)
  metrics.update(aux_metrics(fwd.aux))
  return StepOutput(grads, {}, fwd.aux.batch_stats, metrics)


METHOD = Method(name="joint", gradients=gradients)
