"""OGM-GE-RA: OGM-GE with the ratio steered toward its running average instead of 1 (Li et
al., ICCV 2023, Table 8: the AGM paper's test of its running-average reference on OGM-GE).

As ``ogm_ge``, with ``rho`` replaced by ``rho / mean_{t'<t} rho_{t'}`` (cumulative mean of each
modality's ratio to the runner-up, 1 before the first step): the modality whose ratio has
risen most above its own history is modulated, ``1 - tanh(alpha * relu(rho / mean rho))``, if
that normalised ratio is >= 1. Config section ``ogm_ge_ra``: as ``ogm_ge``'s, ``scope``
included (the released code has no OGM-GE-RA: give it the scope of the OGM-GE run it is
compared with).

The AGM supplement states only the idea (Sec. D: "tune the discrepancy ratio in OGM-GE toward
the running average instead of simply 1"; Table 8's caption) and no code for it was released:
the exact rule above, the normalisation by the cumulative mean included, is agm-jax's
construction of that sentence.
"""

from __future__ import annotations

from agm_jax.methods import ogm_ge
from agm_jax.methods.base import Method


def make_tx(ctx, base):
  return ogm_ge.make_tx(ctx, base, reference="running_mean", name="ogm_ge_ra")


METHOD = Method(name="ogm_ge_ra", hparams=ogm_ge.scoped_hparams, gradients=ogm_ge.gradients,
                make_tx=make_tx, requires_separable=True, logged_state=("coeff",))
