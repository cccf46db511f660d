"""OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al.,
"Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022; released code
GeWu-Lab/OGM-GE_CVPR2022 ``main.py``).

Per step, with uni-modal logits ``W_m z_m + b/k`` (the late-fusion layer's block for m) and
``score_m = sum_i softmax(.)[i, y_i]``: ``rho_v = score_v / score_a``; the dominant modality
gets ``coeff = 1 - tanh(alpha * relu(rho))``, the other 1 (k > 2: ratio to the runner-up,
see ``transforms.score_ratio``). The plain cross-entropy gradient of the dominant modality's
encoder is scaled by ``coeff``, then every encoder kernel gets ``N(0, std(g) + 1e-8)`` (GE),
inside the modulation window only. Needs a late-fusion head.
Config section ``ogm_ge``: ``alpha`` (0.1, the released default), ``noise``, ``scope``,
``start_epoch``, ``end_epoch``.

``scope`` says which parameters are scaled and noised (``transforms.score_ratio``):
``"conv"`` the encoders' 4-D conv kernels (the OGM-GE repository's ``main.py``; the released
AGM code's ``run/AVMNIST_main.py``), ``"branch"`` every parameter of the modality's encoder
and of its sum-head classifier block (the released AGM code's ``run/CREMAD_main.py``, whose
baselines run the sum-fusion ``AVClassifier_Sum``), ``"encoder"`` the encoder's parameters,
``"mixed"`` (default, agm-jax's earlier reading) every encoder parameter scaled and the
encoder kernels (ndim >= 2) noised.
"""

from __future__ import annotations

import dataclasses

import optax

from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, check_late_fusion, from_section
from agm_jax.transforms import score_ratio


@dataclasses.dataclass(frozen=True)
class HParams:
  """``ogm_ge``'s and ``ogm_ge_ra``'s hyper-parameters."""
  alpha: float
  noise: bool
  scope: str
  window: Window


@dataclasses.dataclass(frozen=True)
class PlainHParams:
  """Those without ``scope`` (the T-PAMI ``ogm`` method reads its section with these)."""
  alpha: float
  noise: bool
  window: Window


def hparams(section) -> PlainHParams:
  return from_section(PlainHParams, section)


def scoped_hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base, *, reference="one", name="ogm_ge"):
  check_late_fusion(ctx.model, name)
  return optax.chain(
      score_ratio.ogm_ge(ctx.hp.alpha, num_modalities=ctx.k, noise=ctx.hp.noise,
                         reference=reference, seed=ctx.seed, axis_name=ctx.axis_name,
                         scope=ctx.hp.scope), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  out = branches.late_step(ctx, params, batch_stats, batch, rng)
  scores = score_ratio.ogm_scores(out.unimodal, batch["label"])
  return StepOutput(out.grads, {"scores": scores, "active": active}, out.batch_stats,
                    out.metrics)


METHOD = Method(name="ogm_ge", hparams=scoped_hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",))
