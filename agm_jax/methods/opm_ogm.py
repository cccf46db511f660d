"""OPM+OGM: both T-PAMI 2024 modulations in one run (Wei, Peng, Hu et al., "On-the-fly
Modulation for Balanced Multimodal Learning", Sec. 4.3.9, Table 12; the released
``code/main.py`` with both ``--use_adam_drop`` and ``--use_modulation``).

The forward pass is OPM's (``methods.opm``: modality m's features dropped per example with
probability ``q^m``, examples with nothing left out of the loss, an empty batch takes no
step); the gradient is then scaled by OGM's coefficient (``methods.ogm``, form ``form``) and
gets GE noise. Both read the scores of the undropped features, as the released code computes
``performance_1/2`` before the drop (``models/Classifier.py`` l. 142–147) and uses them for
both. One window for both: the released flags would drop from epoch 6 to the end and modulate
gradients in epochs 6 … ``--modulation_ends``, whose default is 80 (``main.py`` l. 47,
``config.py`` l. 35); the OGM script passes 60 (``train_ogm.sh`` l. 7), but no released script
runs the combination. ``configs/tpami_ks.py`` gives both OPM's window (epoch 6 to the end), so
its gradient modulation runs past 80 and 60; ``end_epoch=80`` ends the drop there as well.
Needs a late-fusion head. Config section ``opm_ogm``: OPM's ``q_base``, ``lam``, ``p_exe``,
``rho``, OGM's ``alpha``, ``form``, ``plus_gain``, ``noise``, ``scope``, and ``start_epoch``,
``end_epoch``.
"""

from __future__ import annotations

import dataclasses

import optax

from agm_jax.methods import opm
from agm_jax.methods.base import Method, Window, check_late_fusion, from_section
from agm_jax.transforms import score_ratio


@dataclasses.dataclass(frozen=True)
class HParams:
  q_base: float
  lam: float
  p_exe: float
  rho: str           # OPM's: "current" | "previous"
  alpha: float
  form: str          # OGM's: "paper" | "code" | "plus"
  plus_gain: float
  noise: bool
  scope: str
  window: Window

  def __post_init__(self):
    opm.HParams(self.q_base, self.lam, self.p_exe, self.rho, self.window)   # its checks


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "opm_ogm")
  hp = ctx.hp
  return score_ratio.skip_empty_batches(
      optax.chain(
          score_ratio.ogm(hp.alpha, num_modalities=ctx.k, form=hp.form,
                          plus_gain=hp.plus_gain, noise=hp.noise, seed=ctx.seed,
                          axis_name=ctx.axis_name, scope=hp.scope),
          score_ratio.opm(hp.q_base, hp.lam, num_modalities=ctx.k, axis_name=ctx.axis_name),
          base),
      axis_name=ctx.axis_name)


METHOD = Method(name="opm_ogm", hparams=hparams, gradients=opm.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff", "drop_prob"))
