"""AGM(1): AGM with the reference fixed at 1 (Li et al., ICCV 2023, Table 8).

Identical to ``agm`` except ``tau^m = 1`` instead of the running-mean reference::

    kappa^m = exp( alpha * min(1 - r^m, clip) ),   r^m = exp((mean_j ce^j - ce^m) * k/(k-1))

so the coefficients push the modalities toward equal mono-modal cross-entropy rather than
resisting *changes* in their balance (``transforms.agm.agm(..., reference="one")``).
Config section ``agm_1``: ``alpha``, ``clip``, ``outside``, ``p_floor``, ``start_epoch``,
``end_epoch`` (as in ``agm``).
"""

from __future__ import annotations

import dataclasses

import optax

from agm_jax.methods import agm
from agm_jax.methods.base import Method, Window, from_section
from agm_jax.shapley import check_p_floor


@dataclasses.dataclass(frozen=True)
class HParams:
  alpha: float
  clip: float
  outside: str
  p_floor: float
  window: Window

  def __post_init__(self):
    check_p_floor(self.p_floor)


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  return optax.chain(agm.modulation(ctx, reference="one"), base)


METHOD = Method(name="agm_1", hparams=hparams, gradients=agm.gradients, make_tx=make_tx,
                logged_state=("kappa",))
