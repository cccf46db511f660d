"""Uni-modal training of one modality (config section ``unimodal``: ``modality``, ``pad``): the
mono-modal concept of AGM §3.2.

For late fusion the model is that modality's encoder plus a linear classifier; for the other
fusions it is the whole multimodal architecture with every other modality's input replaced by
``pad``: "zeros" (the released code), or "normal" (the supplement's random padding, Table 6):
every element drawn i.i.d. from N(0, 1), fresh each training step from the step's key, and
from one fixed key (the run's seed) at evaluation so the logits are deterministic. Late fusion
has no absent modality to pad, so ``pad="normal"`` is an error there. Score labels (a
regression task): the loss is the L1 of the one output and ``acc`` its Acc-2
(``shapley.example_loss``, ``shapley.example_correct``).
"""

from __future__ import annotations

import dataclasses

import jax

from agm_jax import shapley, subsets
from agm_jax.methods.base import EvalOutput, Method, StepOutput, from_section, inputs_of
from agm_jax.models import fusion as fusion_lib


@dataclasses.dataclass(frozen=True)
class HParams:
  modality: str
  pad: str

  def __post_init__(self):
    if self.pad not in shapley.PADS:
      raise ValueError(f"unimodal.pad {self.pad!r} is not one of {list(shapley.PADS)}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def modalities(hp, fusion, data_modalities):
  m = hp.modality
  if m not in data_modalities:
    raise ValueError(f"unimodal.modality {m!r} is not one of the data's modalities "
                     f"{list(data_modalities)}")
  if fusion_lib.is_late(fusion) and hp.pad != "zeros":
    raise ValueError(f"unimodal.pad {hp.pad!r} needs an absent modality to pad; with late "
                     f"fusion the concept is {m!r}'s encoder alone (use 'zeros')")
  model = (m,) if fusion_lib.is_late(fusion) else tuple(data_modalities)
  return model, (m,)


def _inputs(ctx, batch, key):
  """Pad every modality but the trained one (no-op for a single-modality model)."""
  keep = ctx.hp.modality
  x = inputs_of(batch)
  absent = [m for m in ctx.modalities if m != keep]
  if not absent:
    return x
  noise = ctx.hp.pad != "zeros" and key is not None
  key = subsets.device_key(key, ctx.axis_name) if noise else None
  pads = shapley.pads_for(x, absent, ctx.hp.pad, key)   # under pmap each device's own noise
  return {k: pads.get(k, v) for k, v in x.items()}


def _logits(ctx, params, batch_stats, batch, train, key):
  """``((logits, z), new_stats, aux_loss)``; ``aux_loss`` is the model's own auxiliary loss
  of this train-mode pass (PSP's AVPS loss), None for a model without one or in eval mode."""
  dropout_key = subsets.dropout_stream(key, ctx.axis_name) if train else None
  x = _inputs(ctx, batch, key)
  if train and subsets.has_auxiliary_loss(ctx.model):
    (out, aux), stats = subsets.apply(ctx.model, params, batch_stats, x, train=True,
                                      method="with_auxiliary_loss", update=True,
                                      dropout_key=dropout_key)
    return out, stats, aux
  out, stats = subsets.apply(ctx.model, params, batch_stats, x, train=train, update=True,
                             dropout_key=dropout_key)
  return out, stats, None


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  labels = batch["label"]

  def loss_fn(p):
    (logits, _), stats, aux = _logits(ctx, p, batch_stats, batch, True, rng)
    loss = shapley.example_loss(logits, labels).mean()
    return loss + (0.0 if aux is None else aux), (loss, logits, stats, aux)

  (_, (loss, logits, stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  acc = shapley.example_correct(logits, labels).mean()
  m = ctx.hp.modality
  metrics = {"loss": loss, "acc": acc, f"acc/{m}": acc, f"mono_ce/{m}": loss}
  if aux is not None:
    metrics["aux_loss"] = aux
  return StepOutput(grads, {}, stats, metrics)


def evaluate(ctx, params, batch_stats, batch):
  key = jax.random.PRNGKey(ctx.seed)   # the same pads on every evaluation
  (logits, z), _, _ = _logits(ctx, params, batch_stats, batch, False, key)
  labels = batch["label"]
  ce = shapley.example_loss(logits, labels)
  correct = shapley.example_correct(logits, labels)
  return EvalOutput(ce, correct, ce[None], correct[None], z, logits)


METHOD = Method(name="unimodal", hparams=hparams, gradients=gradients, evaluate=evaluate,
                modalities=modalities)
