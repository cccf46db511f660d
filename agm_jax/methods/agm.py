"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023).

Each step: all 2**k masked subsets forward, the mono-modal cross-entropies ``ce^m`` of the
Shapley responses, ``kappa = agm_coefficients(ce, running mean)`` inside the ``agm`` optax
transform (``transforms/agm.py``), and ONE backward pass with cotangent
``(C.T @ kappa)[s] * dL/dphi`` on subset s — ``g = sum_m kappa^m VJP(phi^m, dL/dphi)``
(eq. 6). Gradients flow through every masked pass (unlike BalanceBenchmark's reading, which
stops them: then ``g^m`` would not be modality m's share of the gradient).

Config section ``agm``: ``alpha``, ``clip``, ``reference`` ("running_mean", or "one": the
AGM(1) ablation), ``start_epoch``/``end_epoch`` (the modulation window), ``outside``: the
coefficients outside the window, "one" or "hold" (the last kappa, as the released code's
backward hooks keep it); the running mean updates every step either way; ``p_floor``: the floor
on each example's label probability in ``ce^m`` (0: eq. 4 as written; 1e-8: the released
code's mains, ``shapley.mono_modal_ce``), which kappa and the running mean see while the loss
and its gradient stay unfloored. The masked passes follow the ``subsets`` section.
"""

from __future__ import annotations

import dataclasses

import optax

from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  aux_metrics,
  from_section,
  shapley_step,
  train_metrics,
)
from agm_jax.shapley import check_p_floor
from agm_jax.transforms.agm import agm as agm_transform


@dataclasses.dataclass(frozen=True)
class HParams:
  alpha: float
  clip: float
  reference: str
  outside: str
  p_floor: float
  window: Window

  def __post_init__(self):
    check_p_floor(self.p_floor)


def hparams(section) -> HParams:
  return from_section(HParams, section)


def modulation(ctx, *, reference: str | None = None):
  """The ``agm`` transform of ``ctx.hp`` (``reference`` overrides ``hp.reference``): the one
  place the AGM methods (agm, agm_1, agm_ge) build it."""
  hp = ctx.hp
  return agm_transform(hp.alpha, hp.clip, num_modalities=ctx.k,
                       reference=reference or hp.reference, outside=hp.outside,
                       axis_name=ctx.axis_name)


def make_tx(ctx, base):
  return optax.chain(modulation(ctx), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  fwd, backward = shapley_step(ctx, params, batch_stats, batch, rng, grad_masked=True,
                               p_floor=ctx.hp.p_floor)
  metrics = train_metrics(fwd.loss, fwd.logits, fwd.mono_ce, fwd.mono_acc, batch["label"],
                          ctx.modalities)
  metrics.update(aux_metrics(fwd.aux))
  return StepOutput(backward, {"mono_ce": fwd.mono_ce, "active": active}, fwd.aux.batch_stats,
                    metrics)


METHOD = Method(name="agm", hparams=hparams, gradients=gradients, make_tx=make_tx,
                logged_state=("kappa",))
