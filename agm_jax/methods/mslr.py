"""MSLR: modality-specific learning rates (Yao & Mihalcea, "Modality-specific Learning Rates
for Effective Multimodal Additive Late-fusion", Findings of ACL 2022), as the released AGM
code runs it (``run/CREMAD_main.py``, ``run/AVMNIST_main.py``, ``run/URFunny_main.py``).

Modality m's encoder gradient is scaled by ``c^m = init^m * r^m`` (a per-modality learning
rate for plain SGD): ``r^m = 1`` while the first ``window`` epochs fill a history of m's
validation mono-modal accuracy, then after every epoch ``r^m = acc^m / mean(history^m)`` and
the history slides (``transforms.epoch.mslr``, ``mslr_epoch_update``). The coefficients live
in the optimiser state. Config section ``mslr``:

* ``init``: one value per modality, in modality order (empty = all 1). Released: CREMA-D
  (audio, visual) 0.9, 1.1; AV-MNIST (audio, image) 1.3, 0.7; UR-Funny (audio, visual, text)
  0.9, 1.4, 0.7.
* ``window``: the history's length (released: 5).
* ``scope``: ``"encoder"`` (default) scales ``encoders_<m>``; ``"branch"`` also the sum
  head's ``classifier_<m>``, as the released code (``'audio_net' in layer or 'audio_cls' in
  layer``; its baselines run sum-fusion models with per-modality ``*_cls`` layers).
* ``mono``: the mono-modal accuracy the ratio reads. ``"shapley"`` (default): the Shapley
  responses every method logs; ``"unimodal"``: the late head's uni-modal logits
  ``W_m z_m + b_m`` (the released baselines' ``out_a = audio_cls(a)``), which then also become
  this method's logged ``acc/<m>`` and ``mono_ce/<m>`` rows. Needs a late-fusion head.
* ``split``: the split whose accuracies steer it after every epoch: ``"val"`` (default;
  nothing is selected on test) or ``"test"`` (the released CREMA-D and AV-MNIST mains call
  ``test()`` on ``test_dataloader``, the split they report; UR-Funny's reads its valid split).
* ``start_epoch`` / ``end_epoch``: the coefficients apply inside this window only (the
  released ``modulation_starts <= epoch <= modulation_ends``); the history updates always.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import shapley, subsets
from agm_jax.methods import joint
from agm_jax.methods.base import (
  Method,
  Window,
  check_late_fusion,
  from_section,
  inputs_of,
  one_of,
  shapley_evaluate,
  update_state,
)
from agm_jax.transforms import epoch as epoch_tx

MONO = ("shapley", "unimodal")
SPLITS = ("val", "test")   # the split an epoch-end rule reads (MSLR, MSES)


def check_mono(mono: str) -> str:
  if mono not in MONO:
    raise ValueError(f"mono {mono!r} is unknown; valid: {list(MONO)}")
  return mono


@dataclasses.dataclass(frozen=True)
class HParams:
  init: tuple[float, ...]
  window: int
  scope: str
  mono: str
  split: str
  modulation: Window

  def __post_init__(self):
    check_mono(self.mono)
    one_of("split", self.split, SPLITS)


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
  if ctx.hp.mono == "unimodal":
    check_late_fusion(ctx.model, "mslr")
  return optax.chain(epoch_tx.mslr(init_coefficients(ctx.hp, ctx.k), window=ctx.hp.window,
                                   scope=ctx.hp.scope), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  """Joint training's gradient; ``active`` (the window) reaches the transform."""
  out = joint.gradients(ctx, params, batch_stats, batch, rng, active, opt_state)
  return out._replace(tx_kwargs={**out.tx_kwargs, "active": active})


def mono_evaluate(ctx, params, batch_stats, batch):
  """:func:`base.shapley_evaluate`; with ``hp.mono == "unimodal"`` the per-modality rows are
  those of the late head's uni-modal logits (one more eval-mode encoder pass)."""
  out = shapley_evaluate(ctx, params, batch_stats, batch)
  if ctx.hp.mono == "shapley":
    return out
  feats, _ = subsets.apply(ctx.model, params, batch_stats, inputs_of(batch), train=False,
                           method="encode")
  uni = ctx.model.apply({"params": params}, tuple(feats), method="unimodal_logits")
  uni = jax.lax.stop_gradient(uni).astype(jnp.float32)
  labels = batch["label"]
  return out._replace(mono_ce=shapley.cross_entropy(uni, labels[None]),
                      mono_correct=jnp.argmax(uni, -1) == labels)


def epoch_end(ctx, state, epoch, evaluate):
  del epoch
  metrics = evaluate(ctx.hp.split)[0]
  acc = np.asarray([metrics[f"acc/{m}"] for m in ctx.modalities], np.float32)
  opt_state = update_state(state.opt_state, epoch_tx.MSLRState,
                           lambda s: epoch_tx.mslr_epoch_update(s, acc))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="mslr", hparams=hparams, gradients=gradients, make_tx=make_tx,
                evaluate=mono_evaluate, requires_separable=True, logged_state=("coeff",),
                epoch_end=epoch_end)
