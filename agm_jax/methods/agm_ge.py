"""AGM-GE: AGM plus OGM-GE's generalisation enhancement (Li et al., ICCV 2023, Table 8).

The AGM update ``g = sum_m kappa^m g^m`` (``agm``), then GE noise on the modulated gradient:
every encoder kernel ``g`` (``encoders_<i>``, ndim >= 2) becomes ``g + N(0, std(g) + 1e-8)``
(Peng et al., CVPR 2022; ``transforms.ge``), inside the modulation window only::

    optax.chain(agm(alpha, clip, num_modalities=k), ge_noise(seed), base)

Config section ``agm_ge``: ``alpha``, ``clip``, ``reference``, ``outside``, ``p_floor``,
``start_epoch``, ``end_epoch`` (as in ``agm``); the noise key is seeded by the run's ``seed``.
"""

from __future__ import annotations

import optax

from agm_jax.methods import agm
from agm_jax.methods.base import Method
from agm_jax.transforms import ge


def make_tx(ctx, base):
  return optax.chain(agm.modulation(ctx), ge.ge_noise(seed=ctx.seed), base)


METHOD = Method(name="agm_ge", hparams=agm.hparams, gradients=agm.gradients, make_tx=make_tx,
                logged_state=("kappa",))
