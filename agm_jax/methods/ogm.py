"""OGM (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal Learning",
T-PAMI 2024, Algorithm 2; GeWu-Lab/BML_TPAMI2024 ``code/main.py``): gradient modulation for
any number of modalities.

``rho^m = mean_{j≠m} score_m / score_j`` (scores as OGM-GE's) and modality m's gradient is
scaled by a coefficient of the form ``ogm.form`` (``transforms.score_ratio``):

* ``"paper"``: eq. 11, ``max(0, 1 - alpha * tanh(rho^m - 1))`` if ``rho^m > 1`` else 1;
* ``"code"``: the released ``main.py`` (l. 138–148): the dominant modality (the last on a
  tie) ``1 - tanh(alpha * relu(rho))``, the others 1;
* ``"plus"``: OGM* (Sec. 4.4.2, ``--use_OGM_plus``, l. 128–136): the dominant modality 1, the
  others ``plus_gain`` (released 4); ``alpha`` unused.

then GE noise ``N(0, std(g) + 1e-8)`` on the ``scope`` leaves (``noise``), inside the
modulation window only. The released runs: ``form="code"``, ``scope="conv"`` (the encoders'
4-D kernels), noise on, window ``start_epoch=6`` (the warm-up ``epoch <= 5``, l. 91) to
``--modulation_ends`` (60 in ``train_ogm.sh``). Needs a late-fusion head. Config section
``ogm``: ``alpha``, ``form``, ``plus_gain``, ``noise``, ``scope``, ``start_epoch``,
``end_epoch``. ``alpha`` 0.8 (``train_ogm.sh``) is the code form's value: the paper's form at
the same alpha modulates far less (rho = 2: 0.39 against the code form's 0.08).
"""

from __future__ import annotations

import dataclasses

import optax

from agm_jax.methods import ogm_ge
from agm_jax.methods.base import Method, Window, check_late_fusion, from_section
from agm_jax.transforms import score_ratio


@dataclasses.dataclass(frozen=True)
class HParams:
  alpha: float
  form: str          # "paper" | "code" | "plus" (score_ratio.FORMS)
  plus_gain: float   # OGM*'s gain of the non-dominant modalities (form "plus" only)
  noise: bool
  scope: str
  window: Window


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "ogm")
  hp = ctx.hp
  return optax.chain(score_ratio.ogm(hp.alpha, num_modalities=ctx.k, form=hp.form,
                                     plus_gain=hp.plus_gain, noise=hp.noise, seed=ctx.seed,
                                     axis_name=ctx.axis_name, scope=hp.scope), base)


METHOD = Method(name="ogm", hparams=hparams, gradients=ogm_ge.gradients,
                make_tx=make_tx, requires_separable=True, logged_state=("coeff",))
