"""AGM(1): AGM with the reference fixed at 1 (Li et al., ICCV 2023, Table 8).

Identical to ``agm`` except ``tau^m = 1`` instead of the running-mean reference::

    kappa^m = exp( alpha * min(1 - r^m, clip) ),   r^m = exp((mean_j ce^j - ce^m) * k/(k-1))

so the coefficients push the modalities toward equal mono-modal cross-entropy rather than
resisting *changes* in their balance (``modulation.agm(..., reference="one")``). Config: the
``agm`` section (``agm.reference`` is ignored).
"""

from agm_jax.methods import agm
from agm_jax.methods.base import Method


def make_tx(config, base, k):
  return agm.make_tx(config, base, k, reference="one")


METHOD = Method(name="agm_1", gradients=agm.gradients, make_tx=make_tx, logged_state=("kappa",))
