"""Epoch-level balancing as optax transformations: MSLR, MSES and Gradient-Blending weights.

Each keeps its coefficients in its optimiser state (so a checkpoint holds them) and has a
pure ``*_epoch_update(state, …) -> state`` that the trainer calls after each evaluation; the
per-step ``update`` only applies the current coefficients. Parameters are assigned to
modalities by ``transforms.partition`` (``encoders_<i>`` -> i, the rest shared, never scaled).

**MSLR** (modality-specific learning rates; Yao & Mihalcea, "Modality-specific Learning Rates
for Effective Multimodal Additive Late-fusion", Findings of ACL 2022; as in the released AGM
code, ``run/CREMAD_main.py``): modality m's encoder gradient is scaled by
``c^m = init^m * r^m``. ``r^m = 1`` for the first ``window`` epochs, which fill a history of
m's validation mono-modal accuracy; after that, each epoch
``r^m = acc^m / mean(history^m)`` and the history drops its oldest entry for ``acc^m``.
The released code uses ``init = (0.9, 1.1)`` (audio, visual) and ``window = 5``.

**MSES** (modality-specific early stopping; Fujimori et al., "Modality-specific learning rate
control for multimodal classification", ACPR 2019; as in the released AGM code): with m's
validation mono-modal loss ``l^m_t``, the smoothed loss is ``s_1 = l_1`` and
``s_t = (1 - w) l_{t-1} + w l_t`` (w = 0.4). A new minimum of ``s`` saves m's branch; when it
has not improved for ``patience`` epochs m's branch stops (coefficient 0) and its best weights
are restored. The transform *wraps* the base optimiser so a stopped branch's final updates
are zero too (momentum and weight decay cannot move it). The released code restores the
whole model from the stopping modality's best checkpoint; here only that branch is restored.

**G-Blending** (Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020): loss ``w_fused CE(fused) + sum_m w_m CE(head_m)``. From the train and
held-out ("dep") losses of each head measured ``n`` epochs apart,
``O_N = L^dep_N - L^train_N``, ``dG = L^dep_N - L^dep_{N+n}``, ``dO = O_{N+n} - O_N`` and
``w ∝ max(dG, 0) / dO^2``, normalised to sum to 1 (uniform before the first estimate, or if
no head generalised better).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax.shapley import check_num_modalities
from agm_jax.transforms.common import (
  check_extra_args,
  check_per_modality,
  check_value,
  combine,
  is_traced,
)
from agm_jax.transforms.partition import scale_by_modality, select_by_modality

# --------------------------------------------------------------------------- MSLR


class MSLRState(NamedTuple):
  coeff: jax.Array     # (k,) init * ratio: the current gradient scale of each encoder
  ratio: jax.Array     # (k,) acc / mean(history) (1 until the history is full)
  init: jax.Array      # (k,) the initial per-modality coefficients
  history: jax.Array   # (window, k) the last `window` epochs' validation mono-modal accuracy
  filled: jax.Array    # int32 (): epochs in the history (<= window)


def mslr_ratios(history: jax.Array, accuracy: jax.Array) -> jax.Array:
  """``acc^m / mean_t history[t, m]``."""
  return jnp.asarray(accuracy, jnp.float32) / jnp.asarray(history, jnp.float32).mean(0)


def mslr(init_coefficients: Sequence[float], *, window: int = 5
         ) -> optax.GradientTransformationExtraArgs:
  """MSLR: ``update(grads, state, params=None, *, active=True)`` scales modality m's encoder
  gradient by ``state.coeff[m]`` (by 1 outside the modulation window); call
  :func:`mslr_epoch_update` with the validation mono-modal accuracies after each epoch.
  ``window`` sets the history's shape: static under ``optax.inject_hyperparams``."""
  traced = is_traced(init_coefficients)   # injected by optax.inject_hyperparams, under jit
  init = (jnp if traced else np).asarray(init_coefficients, np.float32).reshape(-1)
  k = check_num_modalities(len(init))
  check_value("window", window, lambda w: w >= 1, "must be >= 1")
  if not traced and not np.all(init > 0):
    raise ValueError(f"init coefficients must be > 0, got {init.tolist()}")

  def init_fn(params):
    del params
    return MSLRState(jnp.asarray(init), jnp.ones((k,), jnp.float32), jnp.asarray(init),
                     jnp.zeros((window, k), jnp.float32), jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    del params
    check_extra_args(extra_args, "mslr")
    return scale_by_modality(updates, jnp.where(active, state.coeff, 1.0)), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mslr_epoch_update(state: MSLRState, accuracy) -> MSLRState:
  """One epoch of the released rule: fill the history, then ``ratio = acc / mean(history)``
  and shift the history."""
  acc = jnp.asarray(accuracy, jnp.float32)
  window = state.history.shape[0]
  full = state.filled >= window
  ratio = jnp.where(full, mslr_ratios(state.history, acc), state.ratio)
  shifted = jnp.roll(state.history, -1, axis=0).at[-1].set(acc)
  filling = state.history.at[jnp.minimum(state.filled, window - 1)].set(acc)
  history = jnp.where(full, shifted, filling)
  return MSLRState(state.init * ratio, ratio, state.init, history,
                   jnp.minimum(state.filled + 1, window).astype(jnp.int32))


# --------------------------------------------------------------------------- MSES


class MSESState(NamedTuple):
  coeff: jax.Array       # (k,) 1 while modality m's branch trains, 0 once it stopped
  best_loss: jax.Array   # (k,) lowest smoothed validation mono-modal loss
  best_epoch: jax.Array  # (k,) int32 epoch of best_loss (-1 before the first)
  last_loss: jax.Array   # (k,) the previous epoch's raw validation loss
  epochs: jax.Array      # int32 (): epochs seen
  best_params: Any       # params at each branch's best epoch (encoders_<m> leaves for m)
  inner: Any             # the wrapped optimiser's state


def mses(inner: optax.GradientTransformation, *, num_modalities: int
         ) -> optax.GradientTransformationExtraArgs:
  """MSES around the optimiser ``inner``: stopped branches get zero gradient and zero update.

  ``update(grads, state, params, **extra)``: ``grads`` of modality m times ``coeff[m]``, then
  ``inner``, then the updates times ``coeff[m]`` again. :func:`mses_epoch_update` decides the
  stops (and returns the params with stopped branches restored).
  """
  k = check_num_modalities(num_modalities)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return MSESState(jnp.ones((k,), jnp.float32), jnp.full((k,), jnp.inf, jnp.float32),
                     jnp.full((k,), -1, jnp.int32), jnp.zeros((k,), jnp.float32),
                     jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params),
                     inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    check_extra_args(extra_args, "mses")
    grads = scale_by_modality(updates, state.coeff)
    out, inner_state = inner.update(grads, state.inner, params, **extra_args)
    return scale_by_modality(out, state.coeff), state._replace(inner=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mses_epoch_update(state: MSESState, val_loss, epoch: int, params: Any, *, patience: int,
                      weight: float = 0.4) -> tuple[MSESState, Any, jax.Array]:
  """After epoch ``epoch`` with validation mono-modal losses ``val_loss`` (k,):
  ``(new_state, params with newly stopped branches restored, newly_stopped (k,) bool)``."""
  loss = jnp.asarray(val_loss, jnp.float32)
  smoothed = jnp.where(state.epochs == 0, loss, (1.0 - weight) * state.last_loss + weight * loss)
  training = state.coeff > 0
  improved = training & (smoothed < state.best_loss)
  best_loss = jnp.where(improved, smoothed, state.best_loss)
  best_epoch = jnp.where(improved, jnp.int32(epoch), state.best_epoch)
  best_params = select_by_modality(improved, params, state.best_params)
  stop = training & (jnp.int32(epoch) - best_epoch >= patience)
  params = select_by_modality(stop, best_params, params)
  new = state._replace(coeff=jnp.where(stop, 0.0, state.coeff), best_loss=best_loss,
                       best_epoch=best_epoch, last_loss=loss, epochs=state.epochs + 1,
                       best_params=best_params)
  return new, params, stop


# --------------------------------------------------------------------------- G-Blending


class BlendState(NamedTuple):
  coeff: jax.Array         # (k,) weights of the uni-modal heads' losses
  fused_weight: jax.Array  # () weight of the fused loss
  last_train: jax.Array    # (k+1,) train losses at the last estimate (heads, then fused)
  last_dep: jax.Array      # (k+1,) held-out losses at the last estimate
  measured: jax.Array      # int32 (): estimates so far


def gblend_weights(train_before, dep_before, train_after, dep_after, *, eps: float = 1e-8
                   ) -> jax.Array:
  """``w ∝ max(dG, 0) / dO^2`` normalised to sum 1 (uniform if every ``dG <= 0``)."""
  t0, d0, t1, d1 = (jnp.asarray(x, jnp.float32) for x in
                    (train_before, dep_before, train_after, dep_after))
  gain = d0 - d1
  overfit = (d1 - t1) - (d0 - t0)
  raw = jax.nn.relu(gain) / (overfit**2 + eps)
  total = raw.sum()
  uniform = jnp.full_like(raw, 1.0 / raw.shape[0])
  return jnp.where(total > 0, raw / jnp.where(total > 0, total, 1.0), uniform)


def blend(num_modalities: int) -> optax.GradientTransformationExtraArgs:
  """G-Blending's weights as a transform: ``update(per_loss_grads, state)`` returns
  ``sum_j w_j g_j`` over the k heads and the fused loss (leading axis k+1, heads first), or
  calls a linear ``w -> grads`` with ``w = (coeff, fused_weight)``."""
  k = check_num_modalities(num_modalities)

  def init_fn(params):
    del params
    return BlendState(jnp.full((k,), 1.0 / (k + 1), jnp.float32),
                      jnp.asarray(1.0 / (k + 1), jnp.float32), jnp.zeros((k + 1,), jnp.float32),
                      jnp.zeros((k + 1,), jnp.float32), jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    check_extra_args(extra_args, "blend")
    check_per_modality(updates, params, k + 1, "blend",
                       f"per-loss gradients (leading axis k+1={k + 1}: the heads, then the "
                       "fused loss) or a linear function w -> grads")
    del params
    w = jnp.concatenate([state.coeff, state.fused_weight[None]])
    return combine(updates, w), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def blend_epoch_update(state: BlendState, train_losses, dep_losses) -> BlendState:
  """Records ``(k+1,)`` train / dep losses (heads, then fused); from the second call on, the
  weights become :func:`gblend_weights` of the previous and this measurement."""
  t1 = jnp.asarray(train_losses, jnp.float32)
  d1 = jnp.asarray(dep_losses, jnp.float32)
  w = gblend_weights(state.last_train, state.last_dep, t1, d1)
  old = jnp.concatenate([state.coeff, state.fused_weight[None]])
  w = jnp.where(state.measured > 0, w, old)
  return BlendState(w[:-1], w[-1], t1, d1, state.measured + 1)
