"""AGM-GE: AGM plus OGM-GE's generalisation enhancement (Li et al., ICCV 2023, Table 8).

The AGM update ``g = sum_m kappa^m g^m`` (``agm``), then GE noise on the modulated gradient:
every encoder kernel ``g`` (``encoders_<i>``, ndim >= 2) becomes ``g + N(0, std(g) + 1e-8)``
(Peng et al., CVPR 2022; ``modulation.ge_noise``), inside the modulation window only::

    optax.chain(agm(alpha, clip, num_modalities=k), ge_noise(seed), base)

Config: the ``agm`` section.
"""

import optax

from agm_jax import modulation
from agm_jax.methods import agm
from agm_jax.methods.base import Method
from agm_jax.train import parallel


def make_tx(config, base, k):
  return optax.chain(
      modulation.agm(config.agm.alpha, config.agm.clip, num_modalities=k,
                     reference=config.agm.reference, axis_name=parallel.axis_name(config)),
      modulation.ge_noise(seed=int(config.seed)), base)


METHOD = Method(name="agm_ge", gradients=agm.gradients, make_tx=make_tx,
                logged_state=("kappa",))
