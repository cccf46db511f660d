"""OGM (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal Learning",
T-PAMI 2024; GeWu-Lab/BML_TPAMI2024): gradient modulation for any number of modalities.

``rho^m = mean_{j≠m} score_m / score_j`` (scores as OGM-GE's), and modality m's encoder
gradient is scaled by ``k^m = max(0, 1 - alpha * tanh(rho^m - 1))`` if ``rho^m > 1`` else 1,
then GE noise ``N(0, std(g) + 1e-8)`` on every encoder kernel; modulation window
``agm.start_epoch … agm.end_epoch``. Needs a late-fusion head (sum, concat). Config:
``ogm.alpha`` (0.8, the released ``train_ogm.sh``), ``ogm.noise``.
"""

import optax

from agm_jax import modulation_ogm
from agm_jax.methods import branches, ogm_ge
from agm_jax.methods.base import Method
from agm_jax.train import parallel


def make_tx(config, base, k):
  branches.check_late_fusion(config, "ogm")
  return optax.chain(
      modulation_ogm.ogm(float(config.ogm.alpha), num_modalities=k,
                         noise=bool(config.ogm.noise), seed=int(config.seed),
                         axis_name=parallel.axis_name(config)), base)


METHOD = Method(name="ogm", gradients=ogm_ge.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",))
