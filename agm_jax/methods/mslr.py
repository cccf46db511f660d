"""MSLR: modality-specific learning rates (Yao & Mihalcea, "Modality-specific Learning Rates
for Effective Multimodal Additive Late-fusion", Findings of ACL 2022), as the released AGM
code runs it (``run/CREMAD_main.py``).

Modality m's encoder gradient is scaled by ``c^m = init^m * r^m`` (a per-modality learning
rate for plain SGD): ``r^m = 1`` while the first ``window`` epochs fill a history of m's
validation mono-modal accuracy, then after every epoch ``r^m = acc^m / mean(history^m)`` and
the history slides (``modulation_epoch.mslr``, ``mslr_epoch_update``). The coefficients live
in the optimiser state. Config: ``mslr.init`` (one value per modality, in modality order;
the released code: audio 0.9, visual 1.1), ``mslr.window`` (5).
"""

import numpy as np
import optax

from agm_jax import modulation_epoch
from agm_jax.methods import branches, joint
from agm_jax.methods.base import Method


def init_coefficients(config, k):
  init = tuple(float(x) for x in (config.mslr.init or ()))
  if not init:
    return (1.0,) * k
  if len(init) != k:
    raise ValueError(f"mslr.init has {len(init)} values but the model has {k} modalities "
                     "(one initial coefficient per modality, in modality order)")
  return init


def make_tx(config, base, k):
  return optax.chain(modulation_epoch.mslr(init_coefficients(config, k),
                                           window=int(config.mslr.window)), base)


def epoch_end(run, state, epoch, evals):
  del epoch
  metrics = evals["val"][0]
  acc = np.asarray([metrics[f"acc/{m}"] for m in run.modalities], np.float32)
  opt_state = branches.update_state(state.opt_state, modulation_epoch.MSLRState,
                                    lambda s: modulation_epoch.mslr_epoch_update(s, acc))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="mslr", gradients=joint.gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end)
