"""Greedy: re-balancing the greedy learner (Wu, Jastrzębski, Cho, Geras, "Characterizing and
Overcoming the Greedy Nature of Learning in Multi-modal Deep Neural Networks", ICML 2022), as
the authors' code runs it (nyukat/greedy_multimodal_learning: ``train.py``,
``src/callbacks.py`` ``Bias_Mitigation_Strong``, ``src/balanced_mmtm.py``).

The model is the MMTM two-stream classifier (``model.fusion = "mmtm"``,
``agm_jax.models.mmtm``); the loss is the sum of the two streams' cross-entropies (the
released ``blend_loss``), the prediction the mean of their logits. After every step's
gradients the ``greedy_rebalance`` transform (``transforms/greedy.py``) measures each group's
learning speed ``sum ||g||^2 / sum ||w||^2``: modality m's *main* parameters are its stream
and classifier (``encoders_<m>``, ``classifier_<m>``), its *bypass* parameters the MMTMs'
``excite_<m>`` layers and the shared ``squeeze`` layers (counted for both, as released). The
accumulated speeds give the conditional learning speeds ``log10(bypass^m / main^m)`` and
their difference ``d``; inside the window (``greedy.start_epoch``: the released
``starting_epoch`` less 1, as its loop counts epochs from 1 and agm-jax from 0) a normal step
with ``|d| > greedy.threshold`` makes the next ``greedy.window`` steps *re-balancing* steps
for modality 0 if ``d > 0`` else 1. In a re-balancing step that modality's MMTM gates are
replaced by their running averages (``curation_mode``): its stream trains without the
cross-modal input. All parameters are trained in every step, with the same loss. Two
modalities only.
Config section ``greedy``: ``threshold``, ``window`` (steps), ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import optax

from agm_jax import shapley, subsets
from agm_jax.methods.base import (
  EvalOutput,
  Method,
  StepOutput,
  Window,
  find_state,
  from_section,
  inputs_of,
  train_metrics,
)
from agm_jax.models.mmtm import MMTMClassifier
from agm_jax.transforms import greedy as greedy_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  threshold: float
  window: int            # re-balancing steps (the modulation window is ``epochs``)
  epochs: Window


def hparams(section) -> HParams:
  return from_section(HParams, section)


_MAIN = re.compile(r"^(encoders|classifier)_(\d+)$")
_EXCITE = re.compile(r"^excite_(\d+)$")


def parameter_groups(path: tuple[str, ...]) -> tuple[int, ...]:
  """The learning-speed groups of an MMTM classifier's parameter (``greedy_rebalance``):
  0, 1 the main branches of modalities 0, 1; 2, 3 their bypass (MMTM) parameters."""
  names = [p for p in path if p != "params"]
  if not names:
    return ()
  main = _MAIN.match(names[0])
  if main:
    return (int(main.group(2)),)
  if names[0].startswith("mmtm_"):
    excite = _EXCITE.match(names[1]) if len(names) > 1 else None
    return (2 + int(excite.group(1)),) if excite else (2, 3)
  return ()


def check_model(model) -> None:
  if not isinstance(model, MMTMClassifier):
    raise ValueError(f"method 'greedy' trains the MMTM model (model.fusion = 'mmtm'); got "
                     f"{type(model).__name__} (the utilisation-rate stand-in for other fusions "
                     f"is method 'greedy_util')")
  if len(model.modalities) != 2:
    raise ValueError(f"method 'greedy' compares two modalities; the model has "
                     f"{len(model.modalities)}")


def make_tx(ctx, base):
  check_model(ctx.model)
  return optax.chain(greedy_tx.greedy_rebalance(ctx.hp.threshold, ctx.hp.window,
                                                parameter_groups, num_modalities=ctx.k), base)


def _losses(logits, labels):
  """``(k,)`` per-stream cross-entropies and accuracies of ``(k, B, K)`` logits."""
  ce = shapley.cross_entropy(logits, labels[None]).mean(-1)
  acc = (jnp.argmax(logits, -1) == labels[None]).mean(-1)
  return ce, acc


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del rng
  labels = batch["label"]
  rebalance = jax.lax.stop_gradient(find_state(opt_state, greedy_tx.GreedyRebalanceState)
                                    .rebalance)

  def loss_fn(p):
    (logits, _), stats = subsets.apply(ctx.model, p, batch_stats, inputs_of(batch), rebalance,
                                       train=True, method="branches", update=True)
    ce, acc = _losses(logits, labels)
    return ce.sum(), (logits, ce, acc, stats)

  (loss, (logits, ce, acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics = train_metrics(loss, logits.mean(0), ce, acc, labels, ctx.modalities)
  return StepOutput(grads, {"active": active}, stats, metrics)


def evaluate(ctx, params, batch_stats, batch) -> EvalOutput:
  """Eval-mode logits (the streams' mean) and each stream's own cross-entropy and accuracy
  (the released ``acc_modal_<m>``)."""
  labels = batch["label"]
  (logits, z), _ = subsets.apply(ctx.model, params, batch_stats, inputs_of(batch), None,
                                 train=False, method="branches")
  mean = logits.mean(0)
  return EvalOutput(shapley.cross_entropy(mean, labels), jnp.argmax(mean, -1) == labels,
                    shapley.cross_entropy(logits, labels[None]),
                    jnp.argmax(logits, -1) == labels[None], z, mean)


METHOD = Method(name="greedy", hparams=hparams, gradients=gradients, make_tx=make_tx,
                evaluate=evaluate, logged_state=("cond_speed", "rebalance"))
