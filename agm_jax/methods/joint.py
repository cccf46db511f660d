"""Joint training: plain cross-entropy of the fused logits (the papers' "Joint" baseline).

The masked subsets are still evaluated (with batch statistics, under ``stop_gradient``) so
the train lines carry each modality's mono-modal accuracy and cross-entropy; on the fast path
that costs only the fusion head on each subset.
"""

import jax.numpy as jnp

from agm_jax.methods.base import Method, StepOutput, mono_metrics, shapley_step


def gradients(ctx, params, batch_stats, batch, rng, active):
  del active
  fwd, backward = shapley_step(ctx, params, batch_stats, batch, rng, grad_masked=False,
                               subset_bn="batch")
  grads = backward(jnp.ones((ctx.k,), jnp.float32))
  return StepOutput(grads, {}, fwd.aux.batch_stats,
                    mono_metrics(fwd, batch["label"], ctx.modalities))


METHOD = Method(name="joint", gradients=gradients)
