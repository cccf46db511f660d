"""OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al.,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022; released code
GeWu-Lab/OGM-GE_CVPR2022 ``main.py``).

Per step, with uni-modal logits ``W_m z_m + b/k`` (the late-fusion layer's block for m) and
``score_m = sum_i softmax(.)[i, y_i]``: ``rho_v = score_v / score_a``; the dominant modality
gets ``coeff = 1 - tanh(alpha * relu(rho))``, the other 1 (k > 2: ratio to the runner-up,
see ``modulation_ogm``). The plain cross-entropy gradient of the dominant modality's encoder
is scaled by ``coeff``, then every encoder kernel gets ``N(0, std(g) + 1e-8)`` (GE), inside
the modulation window ``agm.start_epoch … agm.end_epoch`` only. Needs a late-fusion head
(sum, concat). Config: ``ogm_ge.alpha`` (0.1, the released default), ``ogm_ge.noise``.
"""

import optax

from agm_jax import modulation_ogm
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput
from agm_jax.train import parallel


def make_tx(config, base, k, *, reference="one", name="ogm_ge"):
  branches.check_late_fusion(config, name)
  return optax.chain(
      modulation_ogm.ogm_ge(float(config.ogm_ge.alpha), num_modalities=k,
                            noise=bool(config.ogm_ge.noise), reference=reference,
                            seed=int(config.seed), axis_name=parallel.axis_name(config)),
      base)


def gradients(ctx, params, batch_stats, batch, rng, active):
  out = branches.late_step(ctx, params, batch_stats, batch, rng)
  scores = modulation_ogm.ogm_scores(out.unimodal, batch["label"])
  return StepOutput(out.grads, {"scores": scores, "active": active}, out.batch_stats,
                    out.metrics)


METHOD = Method(name="ogm_ge", gradients=gradients, make_tx=make_tx, requires_separable=True,
                logged_state=("coeff",))
