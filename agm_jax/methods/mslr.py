"""MSLR: modality-specific learning rates (Yao & Mihalcea, "Modality-specific Learning Rates
for Effective Multimodal Additive Late-fusion", Findings of ACL 2022), as the released AGM
code runs it (``run/CREMAD_main.py``).

Modality m's encoder gradient is scaled by ``c^m = init^m * r^m`` (a per-modality learning
rate for plain SGD): ``r^m = 1`` while the first ``window`` epochs fill a history of m's
validation mono-modal accuracy, then after every epoch ``r^m = acc^m / mean(history^m)`` and
the history slides (``transforms.epoch.mslr``, ``mslr_epoch_update``). The coefficients live
in the optimiser state. Config section ``mslr``: ``init`` (one value per modality, in
modality order, empty = all 1; the released code: audio 0.9, visual 1.1), ``window`` (5).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optax

from agm_jax.methods import joint
from agm_jax.methods.base import Method, from_section, update_state
from agm_jax.transforms import epoch as epoch_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  init: tuple[float, ...]
  window: int


def hparams(section) -> HParams:
  return from_section(HParams, section)


def init_coefficients(hp, k):
  if not hp.init:
    return (1.0,) * k
  if len(hp.init) != k:
    raise ValueError(f"init has {len(hp.init)} values but the model has {k} modalities "
                     "(one initial coefficient per modality, in modality order)")
  return hp.init


def make_tx(ctx, base):
  return optax.chain(epoch_tx.mslr(init_coefficients(ctx.hp, ctx.k), window=ctx.hp.window),
                     base)


def epoch_end(ctx, state, epoch, evaluate):
  del epoch
  metrics = evaluate("val")[0]
  acc = np.asarray([metrics[f"acc/{m}"] for m in ctx.modalities], np.float32)
  opt_state = update_state(state.opt_state, epoch_tx.MSLRState,
                           lambda s: epoch_tx.mslr_epoch_update(s, acc))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="mslr", hparams=hparams, gradients=joint.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
