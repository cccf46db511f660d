"""Uni-modal training of one modality (config section ``unimodal``: ``modality``): the
mono-modal concept of AGM §3.2.

For late fusion the model is that modality's encoder plus a linear classifier; for the other
fusions it is the whole multimodal architecture with every other modality's input zeroed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods.base import EvalOutput, Method, StepOutput, from_section, inputs_of
from agm_jax.models import fusion as fusion_lib


@dataclasses.dataclass(frozen=True)
class HParams:
  modality: str


def hparams(section) -> HParams:
  return from_section(HParams, section)


def modalities(hp, fusion, data_modalities):
  m = hp.modality
  if m not in data_modalities:
    raise ValueError(f"unimodal.modality {m!r} is not one of the data's modalities "
                     f"{list(data_modalities)}")
  model = (m,) if fusion_lib.is_late(fusion) else tuple(data_modalities)
  return model, (m,)


def _inputs(ctx, batch):
  """Zero every modality but the trained one (no-op for a single-modality model)."""
  keep = ctx.hp.modality
  x = inputs_of(batch)
  return {k: (jnp.zeros_like(v) if k in ctx.modalities and k != keep else v)
          for k, v in x.items()}


def _logits(ctx, params, batch_stats, batch, train):
  return subsets.apply(ctx.model, params, batch_stats, _inputs(ctx, batch), train=train,
                       update=True)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del rng, active, opt_state
  labels = batch["label"]

  def loss_fn(p):
    (logits, _), stats = _logits(ctx, p, batch_stats, batch, True)
    return shapley.cross_entropy(logits, labels).mean(), (logits, stats)

  (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  acc = (jnp.argmax(logits, -1) == labels).mean()
  m = ctx.hp.modality
  return StepOutput(grads, {}, stats, {"loss": loss, "acc": acc, f"acc/{m}": acc,
                                       f"mono_ce/{m}": loss})


def evaluate(ctx, params, batch_stats, batch):
  (logits, z), _ = _logits(ctx, params, batch_stats, batch, False)
  labels = batch["label"]
  ce = shapley.cross_entropy(logits, labels)
  correct = jnp.argmax(logits, -1) == labels
  return EvalOutput(ce, correct, ce[None], correct[None], z, logits)


METHOD = Method(name="unimodal", hparams=hparams, gradients=gradients, evaluate=evaluate,
                modalities=modalities)
