"""MSES: modality-specific early stopping (Fujimori et al., "Modality-specific learning rate
control for multimodal classification", ACPR 2019), as the released AGM code runs it
(``run/CREMAD_main.py``).

After each epoch, modality m's validation mono-modal cross-entropy ``l^m`` is smoothed
(``s_1 = l_1``, ``s_t = 0.6 l_{t-1} + 0.4 l_t``); a new minimum saves m's branch (its
``encoders_<m>`` parameters, in the optimiser state). When ``s^m`` has not improved for
``patience`` epochs, m's branch stops — zero gradient and zero optimiser update from then on —
and its best weights are restored (the released code restores the whole model; here only
the branch). The fusion head keeps training. Config section ``mses``: ``patience`` (5 for the
20-epoch default; the released CREMA-D runs use 80 of 100+ epochs), ``weight`` (0.4).
"""

from __future__ import annotations

import dataclasses

from agm_jax.methods import joint
from agm_jax.methods.base import Method, find_state, from_section, update_state
from agm_jax.transforms import epoch as epoch_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  patience: int
  weight: float

  def __post_init__(self):
    if self.patience < 1:
      raise ValueError(f"patience must be >= 1, got {self.patience}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  return epoch_tx.mses(base, num_modalities=ctx.k)


def epoch_end(ctx, state, epoch, evaluate):
  metrics = evaluate("val")[0]
  loss = [metrics[f"mono_ce/{m}"] for m in ctx.modalities]
  mstate = find_state(state.opt_state, epoch_tx.MSESState)
  new, params, _ = epoch_tx.mses_epoch_update(mstate, loss, epoch, state.params,
                                              patience=ctx.hp.patience, weight=ctx.hp.weight)
  opt_state = update_state(state.opt_state, epoch_tx.MSESState, lambda _: new)
  return state.replace(params=params, opt_state=opt_state)


METHOD = Method(name="mses", hparams=hparams, gradients=joint.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
