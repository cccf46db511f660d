"""MSES: modality-specific early stopping (Fujimori et al., "Modality-specific learning rate
control for multimodal classification", ACPR 2019), as the released AGM code runs it
(``run/CREMAD_main.py``, ``run/AVMNIST_main.py``, ``run/URFunny_main.py``).

After each epoch, modality m's validation mono-modal cross-entropy ``l^m`` is smoothed
(``s_1 = l_1``, ``s_t = 0.6 l_{t-1} + 0.4 l_t``, ``l_{t-1}`` the previous raw loss); a
strictly lower ``s^m`` makes this epoch m's best ``b^m`` and snapshots the state (in the
optimiser state, so checkpointed). After epoch ``t`` with ``t - b^m > patience`` m's branch
stops (coefficient 0: zero gradient, and with ``freeze="update"`` zero update) and the
snapshot of ``b^m`` is restored; when every branch has stopped the run ends (the transform's
``run_finished`` flag, read by ``train/loop.py``; the released ``exit()``). The fusion head
keeps training. Config section ``mses``:

* ``patience``: 5 for the 20-epoch default; released: CREMA-D 80, AV-MNIST 10, UR-Funny 30
  (``epoch - best_epoch > patience``).
* ``weight``: 0.4 (the current loss's share of the smoothed loss).
* ``restore``: ``"model"`` (default; released: the whole model and the optimiser state,
  momentum and learning rate included, from the stopping modality's best epoch; memory: k
  snapshots of params + optimiser state, ``transforms.epoch``) or ``"modality"`` (that
  modality's own parameters only; one parameter-sized snapshot).
* ``freeze``: ``"update"`` (default: a stopped branch does not move) or ``"gradient"``
  (released: only its gradient is zeroed; momentum and weight decay still move it).
* ``scope``, ``mono``, ``split``, ``start_epoch``/``end_epoch``: as ``mslr``'s (released:
  ``"branch"``, ``"unimodal"``, the split the main reports; the coefficients apply inside the
  window only, the stopping test always).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from agm_jax.methods import mslr
from agm_jax.methods.base import (
  Method,
  Window,
  check_late_fusion,
  find_state,
  from_section,
  one_of,
  update_state,
)
from agm_jax.transforms import epoch as epoch_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  patience: int
  weight: float
  restore: str
  freeze: str
  scope: str
  mono: str
  split: str
  modulation: Window

  def __post_init__(self):
    if self.patience < 1:
      raise ValueError(f"patience must be >= 1, got {self.patience}")
    mslr.check_mono(self.mono)
    one_of("split", self.split, mslr.SPLITS)


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  if ctx.hp.mono == "unimodal":
    check_late_fusion(ctx.model, "mses")
  return epoch_tx.mses(base, num_modalities=ctx.k, restore=ctx.hp.restore,
                       freeze=ctx.hp.freeze, scope=ctx.hp.scope)


_epoch_update = jax.jit(epoch_tx.mses_epoch_update, static_argnames=("patience", "weight",
                                                                     "scope"))


def epoch_end(ctx, state, epoch, evaluate):
  metrics = evaluate(ctx.hp.split)[0]
  loss = np.asarray([metrics[f"mono_ce/{m}"] for m in ctx.modalities], np.float32)
  mstate = find_state(state.opt_state, epoch_tx.MSESState)
  new, params, stop = _epoch_update(mstate, loss, epoch, state.params,
                                    patience=ctx.hp.patience, weight=ctx.hp.weight,
                                    scope=ctx.hp.scope)
  for i in np.flatnonzero(np.asarray(stop)):
    logging.info("mses: %s stopped after epoch %d; restored its best epoch %d",
                 ctx.modalities[i], epoch, int(np.asarray(new.best_epoch)[i]))
  opt_state = update_state(state.opt_state, epoch_tx.MSESState, lambda _: new)
  return state.replace(params=params, opt_state=opt_state)


METHOD = Method(name="mses", hparams=hparams, gradients=mslr.gradients, make_tx=make_tx,
                evaluate=mslr.mono_evaluate, requires_separable=True, logged_state=("coeff",),
                epoch_end=epoch_end)
