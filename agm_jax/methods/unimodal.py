"""Uni-modal training of one modality (``config.unimodal.modality``): the mono-modal concept.

For late fusion (``sum``/``concat``) the model is that modality's encoder plus a linear
classifier; for the other fusions it is the whole multimodal architecture with every other
modality's input zeroed (AGM §3.2).
"""

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods.base import EvalOutput, Method, StepOutput, inputs_of
from agm_jax.train import forward

LATE_FUSIONS = ("sum", "concat")


def model_modalities(config, modalities):
  m = config.unimodal.modality
  if m not in modalities:
    raise ValueError(f"unimodal.modality {m!r} is not one of the data's modalities "
                     f"{list(modalities)}")
  return (m,) if config.model.fusion in LATE_FUSIONS else tuple(modalities)


def _inputs(ctx, batch):
  """Zero every modality but the trained one (no-op for a single-modality model)."""
  keep = ctx.config.unimodal.modality
  x = inputs_of(batch)
  return {k: (jnp.zeros_like(v) if k in ctx.modalities and k != keep else v)
          for k, v in x.items()}


def _logits(ctx, params, batch_stats, batch, train):
  return forward._apply(ctx.model, params, batch_stats, _inputs(ctx, batch), train=train,
                        update=True)


def gradients(ctx, params, batch_stats, batch, rng, active):
  del rng, active
  labels = batch["label"]

  def loss_fn(p):
    (logits, _), stats = _logits(ctx, p, batch_stats, batch, True)
    return shapley.cross_entropy(logits, labels).mean(), (logits, stats)

  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  acc = (jnp.argmax(logits, -1) == labels).mean()
  m = ctx.config.unimodal.modality
  return StepOutput(grads, {}, stats, {"loss": loss, "acc": acc, f"acc/{m}": acc,
                                       f"mono_ce/{m}": loss})


def evaluate(ctx, params, batch_stats, batch):
  (logits, z), _ = _logits(ctx, params, batch_stats, batch, False)
  labels = batch["label"]
  ce = shapley.cross_entropy(logits, labels)
  correct = jnp.argmax(logits, -1) == labels
  return EvalOutput(ce, correct, ce[None], correct[None], z, logits)


METHOD = Method(name="unimodal", gradients=gradients, evaluate=evaluate,
                model_modalities=model_modalities,
                mono_modalities=lambda ctx: (ctx.config.unimodal.modality,))
