"""Flax linen's ``TrainState`` with the modulation transforms (docs/COMPOSING.md).

``flax.training.train_state.TrainState.apply_gradients(grads=…, **kwargs)`` calls
``tx.update(grads, opt_state, params)`` and treats every other keyword as a field to replace,
so ``mono_ce`` (``agm``), ``scores`` (OGM family), ``utilisation`` (Greedy) or ``active`` never
reach the transform. Here a keyword that is a field of the state is replaced, as in flax, and
every other keyword goes to ``tx.update``::

    state = ModulatedTrainState.create(apply_fn=model.apply, params=params,
                                       tx=optax.chain(modulation.agm(…), optax.sgd(…)))
    state = state.apply_gradients(grads=per_modality_grads, mono_ce=aux["mono_ce"])

or, for a ``TrainState`` (sub)class of your own,
``apply_modulated_gradients(state, grads=…, mono_ce=…, batch_stats=…)``.

Core level: imports only flax's ``train_state`` and optax (never the trainer). Flax's fp8
``OVERWRITE_WITH_GRADIENT`` collection is not handled here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optax
from flax.training import train_state


def apply_modulated_gradients(state: train_state.TrainState, *, grads: Any,
                              **kwargs: Any) -> train_state.TrainState:
  """``state.apply_gradients`` that forwards keyword arguments to ``tx.update``.

  ``grads`` are what the chain's first transform takes (``agm``: per-modality gradients with a
  leading axis k, or a linear function ``kappa -> grads``). Keywords naming a field of
  ``state`` (``batch_stats``, …) replace it; all others (``mono_ce``, ``active``, …) are
  passed to ``state.tx.update``, whose transforms reject a misspelt one.
  """
  fields = {f.name for f in dataclasses.fields(state)}
  replace = {k: v for k, v in kwargs.items() if k in fields}
  tx_kwargs = {k: v for k, v in kwargs.items() if k not in fields}
  tx = optax.with_extra_args_support(state.tx)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, **tx_kwargs)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state, **replace)


class ModulatedTrainState(train_state.TrainState):
  """A flax ``TrainState`` whose ``apply_gradients`` forwards ``mono_ce=…`` (and every other
  keyword that is not a field of the state) to ``tx.update``: :func:`apply_modulated_gradients`.
  Subclass it to add fields (``batch_stats``) as with ``TrainState``."""

  def apply_gradients(self, *, grads, **kwargs):
    return apply_modulated_gradients(self, grads=grads, **kwargs)
