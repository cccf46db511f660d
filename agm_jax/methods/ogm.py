"""OGM (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal Learning",
T-PAMI 2024; GeWu-Lab/BML_TPAMI2024): gradient modulation for any number of modalities.

``rho^m = mean_{j≠m} score_m / score_j`` (scores as OGM-GE's), and modality m's encoder
gradient is scaled by ``k^m = max(0, 1 - alpha * tanh(rho^m - 1))`` if ``rho^m > 1`` else 1,
then GE noise ``N(0, std(g) + 1e-8)`` on every encoder kernel, inside the modulation window.
Needs a late-fusion head. Config section ``ogm``: ``alpha`` (0.8, the released
``train_ogm.sh``), ``noise``, ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import optax

from agm_jax.methods import ogm_ge
from agm_jax.methods.base import Method, check_late_fusion
from agm_jax.transforms import score_ratio


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "ogm")
  return optax.chain(score_ratio.ogm(ctx.hp.alpha, num_modalities=ctx.k, noise=ctx.hp.noise,
                                     seed=ctx.seed, axis_name=ctx.axis_name), base)


METHOD = Method(name="ogm", hparams=ogm_ge.hparams, gradients=ogm_ge.gradients,
                make_tx=make_tx, requires_separable=True, logged_state=("coeff",))
