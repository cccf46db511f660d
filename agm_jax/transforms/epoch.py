"""Epoch-level balancing as optax transformations: MSLR, MSES and Gradient-Blending weights.

Each keeps its coefficients in its optimiser state (so a checkpoint holds them) and has a
pure ``*_epoch_update(state, …) -> state`` that the trainer calls after each evaluation; the
per-step ``update`` only applies the current coefficients. Parameters are assigned to
modalities by ``transforms.partition`` (``encoders_<i>`` -> i, the rest shared, never scaled).

**MSLR** (modality-specific learning rates; Yao & Mihalcea, "Modality-specific Learning Rates
for Effective Multimodal Additive Late-fusion", Findings of ACL 2022; as in the released AGM
code, ``run/CREMAD_main.py``): modality m's encoder gradient (``scope="branch"``: and its
sum-head classifier block's, as the released code's ``audio_net``/``audio_cls``) is scaled by
``c^m = init^m * r^m``. ``r^m = 1`` for the first ``window`` epochs, which fill a history of
m's validation mono-modal accuracy; after that, each epoch
``r^m = acc^m / mean(history^m)`` and the history drops its oldest entry for ``acc^m``.
The released code uses ``window = 5`` and ``init`` (audio, visual) = (0.9, 1.1) on CREMA-D,
(1.3, 0.7) on AV-MNIST, (0.9, 1.4, 0.7) (audio, visual, text) on UR-Funny.

**MSES** (modality-specific early stopping; Fujimori et al., "Modality-specific learning rate
control for multimodal classification", ACPR 2019; as in the released AGM code): with m's
validation mono-modal loss ``l^m_t``, the smoothed loss is ``s_1 = l_1`` and
``s_t = (1 - w) l_{t-1} + w l_t`` (w = 0.4; ``l_{t-1}`` the previous *raw* loss, as released).
A strictly lower ``s`` is m's new best epoch ``b^m``; after epoch ``t`` with
``t - b^m > patience`` m's branch stops (coefficient 0, from epoch ``b^m + patience + 1``)
and the state of epoch ``b^m`` is restored; once every branch has stopped the state's
``run_finished`` flag asks the trainer to end the run (the released ``exit()``).
``restore="model"`` (the released code: ``model.load_state_dict`` and
``optimizer.load_state_dict`` of the checkpoint saved at ``b^m``) restores every parameter and
the wrapped optimiser's whole state (momentum, step count, hence the learning-rate schedule's
position, and any running statistics it keeps) from ``b^m``. The released code differs in the
schedule: its learning rate comes back with the optimiser state, but its ``StepLR`` keeps
counting epochs from the stop, not from ``b^m``; it keeps one snapshot of
(params, inner optimiser state) per modality: k extra copies of both (SGD with momentum: 2k
parameter-sized trees in memory and in every checkpoint). ``restore="modality"`` (lighter:
one parameter-sized tree) restores only m's own parameters (``scope``). BatchNorm running
statistics are not in the snapshot (the optimiser never sees them): the train-mode passes
use batch statistics, and by the next evaluation the running ones have been rebuilt
(momentum 0.9 per step: weight 0.9^steps on the old values). ``freeze="update"``: a stopped
branch gets zero gradient *and* zero update (the transform wraps the base optimiser, so
momentum and weight decay cannot move it); ``freeze="gradient"``: only its loss gradient is
zeroed, as the released code (``grad * 0`` before ``SGD(momentum=0.9, weight_decay=1e-4)``),
so weight decay and momentum still move it.

**G-Blending** (Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020, section 3.3): loss ``w_fused CE(fused) + sum_m w_m CE(head_m)``. From the
train and held-out ("dep") losses of each head at checkpoints ``n`` and ``n + N``: the
overfitting change ``dO = (L^dep_{n+N} - L^train_{n+N}) - (L^dep_n - L^train_n)``, the
generalisation gain ``dG = L^dep_n - L^dep_{n+N}`` and ``w ∝ G(dG) / dO^2``, normalised to sum
to 1 (:func:`gblend_weights`). ``gain="clip"``: ``G = max(dG, 0)`` (a head whose held-out loss
rose gets weight 0; uniform if no head's fell); ``gain="abs"``: ``G = |dG|`` (GeWu-Lab
BalanceBenchmark, ``balancemm/trainer/GBlending_trainer.py``, ``abs(g / o**2)``). ``dO = 0``
is guarded by ``eps`` (a huge, finite weight; the code divides by zero).
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
from agm_jax.transforms.partition import check_scope, scale_by_modality, select_by_modality

BRANCH_SCOPES = ("encoder", "branch")   # which leaves a modality's coefficient scales

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


def mslr(init_coefficients: Sequence[float], *, window: int = 5, scope: str = "encoder"
         ) -> optax.GradientTransformationExtraArgs:
  """MSLR: ``update(grads, state, params=None, *, active=True)`` scales modality m's encoder
  gradient (``scope="branch"``: and its classifier block's, ``transforms.partition``) by
  ``state.coeff[m]`` (by 1 outside the modulation window); call :func:`mslr_epoch_update`
  with the validation mono-modal accuracies after each epoch. ``window`` sets the history's
  shape: static under ``optax.inject_hyperparams``."""
  check_scope(scope, BRANCH_SCOPES)
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
    return scale_by_modality(updates, jnp.where(active, state.coeff, 1.0), scope=scope), state

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


RESTORES = ("model", "modality")
FREEZES = ("update", "gradient")


class MSESState(NamedTuple):
  coeff: jax.Array         # (k,) 1 while modality m's branch trains, 0 once it stopped
  best_loss: jax.Array     # (k,) lowest smoothed validation mono-modal loss
  best_epoch: jax.Array    # (k,) int32 epoch of best_loss (-1 before the first)
  last_loss: jax.Array     # (k,) the previous epoch's raw validation loss
  epochs: jax.Array        # int32 (): epochs seen
  run_finished: jax.Array  # bool (): every branch has stopped: the trainer ends the run
  best_params: Any         # "model": k params trees (m's best epoch's); "modality": one tree
  best_inner: Any          # "model": k inner states (m's best epoch's); "modality": ()
  inner: Any               # the wrapped optimiser's state


def mses(inner: optax.GradientTransformation, *, num_modalities: int, restore: str = "model",
         freeze: str = "update", scope: str = "encoder") -> optax.GradientTransformationExtraArgs:
  """MSES around the optimiser ``inner``: stopped branches get zero gradient (and, with
  ``freeze="update"``, zero update).

  ``update(grads, state, params, *, active=True, **extra)``: ``grads`` of modality m (its
  leaves under ``scope``) times ``coeff[m]``, then ``inner``, then (``freeze="update"``) the
  updates times ``coeff[m]`` again; outside the modulation window (``active=False``) the
  coefficients are 1. :func:`mses_epoch_update` decides the stops and restores; ``restore``
  fixes the snapshots' shape (module docstring).
  """
  k = check_num_modalities(num_modalities)
  check_scope(scope, BRANCH_SCOPES)
  if restore not in RESTORES:
    raise ValueError(f"restore {restore!r} is unknown; valid: {list(RESTORES)}")
  if freeze not in FREEZES:
    raise ValueError(f"freeze {freeze!r} is unknown; valid: {list(FREEZES)}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
    inner_state = inner.init(params)
    if restore == "model":
      best_params = tuple(copy(params) for _ in range(k))
      best_inner = tuple(copy(inner_state) for _ in range(k))
    else:
      best_params, best_inner = copy(params), ()
    return MSESState(jnp.ones((k,), jnp.float32), jnp.full((k,), jnp.inf, jnp.float32),
                     jnp.full((k,), -1, jnp.int32), jnp.zeros((k,), jnp.float32),
                     jnp.zeros((), jnp.int32), jnp.zeros((), bool), best_params, best_inner,
                     inner_state)

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    check_extra_args(extra_args, "mses")
    coeff = jnp.where(active, state.coeff, 1.0)
    grads = scale_by_modality(updates, coeff, scope=scope)
    out, inner_state = inner.update(grads, state.inner, params, active=active, **extra_args)
    if freeze == "update":
      out = scale_by_modality(out, coeff, scope=scope)
    return out, state._replace(inner=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _where(on, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(on, a, b), new, old)


def mses_epoch_update(state: MSESState, val_loss, epoch, params: Any, *, patience: int,
                      weight: float = 0.4, scope: str = "encoder"
                      ) -> tuple[MSESState, Any, jax.Array]:
  """After epoch ``epoch`` with validation mono-modal losses ``val_loss`` (k,):
  ``(new_state, params, newly_stopped (k,) bool)``, the params (and, ``restore="model"``, the
  state's ``inner``) restored for a newly stopped branch. Branch m stops when
  ``epoch - best_epoch[m] > patience``; several stopping together restore the last one's
  snapshot (the released code restores each in modality order). ``scope`` must be the
  transform's (it picks the leaves a ``restore="modality"`` snapshot keeps)."""
  loss = jnp.asarray(val_loss, jnp.float32)
  smoothed = jnp.where(state.epochs == 0, loss, (1.0 - weight) * state.last_loss + weight * loss)
  training = state.coeff > 0
  improved = training & (smoothed < state.best_loss)
  best_loss = jnp.where(improved, smoothed, state.best_loss)
  best_epoch = jnp.where(improved, jnp.asarray(epoch, jnp.int32), state.best_epoch)
  stop = training & (jnp.asarray(epoch, jnp.int32) - best_epoch > patience)
  inner = state.inner
  if state.best_inner == ():       # restore="modality": m's own leaves
    best_params = select_by_modality(improved, params, state.best_params, scope=scope)
    params = select_by_modality(stop, best_params, params, scope=scope)
    best_inner = ()
  else:                            # restore="model": the whole snapshot of m's best epoch
    k = loss.shape[0]
    best_params = tuple(_where(improved[m], params, state.best_params[m]) for m in range(k))
    best_inner = tuple(_where(improved[m], inner, state.best_inner[m]) for m in range(k))
    for m in range(k):
      params = _where(stop[m], best_params[m], params)
      inner = _where(stop[m], best_inner[m], inner)
  coeff = jnp.where(stop, 0.0, state.coeff)
  new = MSESState(coeff, best_loss, best_epoch, loss, state.epochs + 1, jnp.all(coeff == 0),
                  best_params, best_inner, inner)
  return new, params, stop


# --------------------------------------------------------------------------- G-Blending


class BlendState(NamedTuple):
  coeff: jax.Array         # (k,) weights of the uni-modal heads' losses
  fused_weight: jax.Array  # () weight of the fused loss
  last_train: jax.Array    # (k+1,) train losses at the last estimate (heads, then fused)
  last_dep: jax.Array      # (k+1,) held-out losses at the last estimate
  measured: jax.Array      # int32 (): estimates so far


GAINS = ("clip", "abs")


def gblend_weights(train_before, dep_before, train_after, dep_after, *, gain: str = "clip",
                   eps: float = 1e-8) -> jax.Array:
  """``w ∝ G / dO^2`` normalised to sum 1, per head (module docstring): ``G = max(dG, 0)``
  (``gain="clip"``; uniform if every ``dG <= 0``) or ``|dG|`` (``gain="abs"``)."""
  check_value("gain", gain, lambda g: g in GAINS, f"must be one of {GAINS}")
  t0, d0, t1, d1 = (jnp.asarray(x, jnp.float32) for x in
                    (train_before, dep_before, train_after, dep_after))
  gain_value = d0 - d1
  overfit = (d1 - t1) - (d0 - t0)
  g = jax.nn.relu(gain_value) if gain == "clip" else jnp.abs(gain_value)
  raw = g / (overfit**2 + eps)
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


def blend_epoch_update(state: BlendState, train_losses, dep_losses, *, gain: str = "clip"
                       ) -> BlendState:
  """Records ``(k+1,)`` train / dep losses (heads, then fused); from the second call on, the
  weights become :func:`gblend_weights` of the previous and this measurement."""
  t1 = jnp.asarray(train_losses, jnp.float32)
  d1 = jnp.asarray(dep_losses, jnp.float32)
  w = gblend_weights(state.last_train, state.last_dep, t1, d1, gain=gain)
  old = jnp.concatenate([state.coeff, state.fused_weight[None]])
  w = jnp.where(state.measured > 0, w, old)
  return BlendState(w[:-1], w[-1], t1, d1, state.measured + 1)


def blend_estimate(state: BlendState, train_before, dep_before, train_after, dep_after, *,
                   gain: str = "clip") -> BlendState:
  """The weights of one forward estimate (G-Blending's Algorithm 2): :func:`gblend_weights` of
  ``(k+1,)`` losses measured at ``n`` and ``n + N`` (heads, then fused); records the latter."""
  w = gblend_weights(train_before, dep_before, train_after, dep_after, gain=gain)
  return BlendState(w[:-1], w[-1], jnp.asarray(train_after, jnp.float32),
                    jnp.asarray(dep_after, jnp.float32), state.measured + 1)
