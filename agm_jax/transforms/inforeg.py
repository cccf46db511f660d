"""InfoReg's regulation of the information-sufficient modality (Huang, Wei, Yang, Hu,
"Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition", CVPR 2025,
arXiv 2503.18595; authors' code GeWu-Lab/InfoReg_CVPR2025 ``main.py``) as an optax transform:
:func:`inforeg`.

``update(grads, state, params, *, strength)``: every leaf of encoder m gets
``g + strength[m] * (theta - anchor)``, a pull towards the encoder's parameters at the start
of the epoch (``anchor``; the code's ``global_model``, copied before every epoch). The
transform also accumulates, over the epoch, each encoder's information acquisition: the trace
of its empirical Fisher information, ``sum_layers mean(g_final^2)`` over the encoder's weight
matrices and kernels (ndim >= 2; the code's ``Conv2d``/``Linear`` weights), summed over the
steps (``fim``). :func:`epoch_update` closes an epoch: the traces join a history, the anchor
becomes the current parameters, and the prime-learning-window test for the next epoch is
recomputed (:func:`window_open`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax.transforms import partition
from agm_jax.transforms.common import check_extra_args, require_extra_arg

HISTORY = 11          # the code's window test reads the last 11 epochs' traces
WINDOW_MEAN = 10      # … as two means over 10 (sum / 10, also while fewer exist)
THRESHOLD = 0.05      # regulation while the relative change of the mean trace exceeds this


class InfoRegState(NamedTuple):
  inner: optax.OptState
  anchor: Any           # the parameters at the start of the epoch
  fim: jax.Array        # (k,) this epoch's Fisher-trace sums per encoder
  history: jax.Array    # (HISTORY, k) the last epochs' traces, oldest first
  epochs: jax.Array     # () int32: epochs closed
  open: jax.Array       # () bool: whether this epoch is inside the prime learning window
  strength: jax.Array   # (k,) the last step's regulation strength per encoder


def fisher_traces(grads, k: int) -> jax.Array:
  """``(k,)``: per encoder ``sum`` over its ndim >= 2 leaves of ``mean(g^2)``."""
  out = jnp.zeros((k,), jnp.float32)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    m = partition.modality_index(path)
    if 0 <= m < k and g.ndim >= 2:
      out = out.at[m].add(jnp.mean(jnp.square(g.astype(jnp.float32))))
  return out


def window_open(history: np.ndarray, epochs: int, modality: int | None) -> bool:
  """The code's test before an epoch: ``k = (tr1 - tr2) / tr1`` with ``tr1`` the sum of the
  last 10 epochs' traces / 10 and ``tr2`` that of the 10 before the last / 10, on the trace of
  encoder ``modality`` (None: the sum over encoders); open while ``k > 0.05``; always open
  before the first epoch."""
  if epochs == 0:
    return True
  h = np.asarray(history, np.float64)[-min(epochs, HISTORY):]
  trace = h.sum(-1) if modality is None else h[:, modality]
  tr1 = trace[-WINDOW_MEAN:].sum() / WINDOW_MEAN
  tr2 = trace[-WINDOW_MEAN - 1:-1].sum() / WINDOW_MEAN
  return bool(tr1 > 0 and (tr1 - tr2) / tr1 > THRESHOLD)


def inforeg(inner: optax.GradientTransformation, *, num_modalities: int
            ) -> optax.GradientTransformationExtraArgs:
  """``inner`` after the pull of each encoder towards its epoch-start parameters,
  ``strength[m]`` per step (0 leaves encoder m's gradient as it is), and the Fisher traces
  (module docstring). ``strength`` is consumed here; the other keywords go to ``inner``."""
  k = num_modalities
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return InfoRegState(inner.init(params), jax.tree.map(jnp.asarray, params),
                        jnp.zeros((k,), jnp.float32), jnp.zeros((HISTORY, k), jnp.float32),
                        jnp.zeros((), jnp.int32), jnp.ones((), bool),
                        jnp.zeros((k,), jnp.float32))

  def update_fn(updates, state, params=None, *, strength=None, **extra_args):
    check_extra_args(extra_args, "inforeg")
    require_extra_arg(strength, "strength", "inforeg", "the (k,) regulation strength")
    if params is None:
      raise ValueError("inforeg needs params in tx.update (the pull towards the anchor)")
    strength = jnp.where(state.open, jnp.asarray(strength, jnp.float32), 0.0)

    def one(path, g, p, a):
      m = partition.modality_index(path)
      if m < 0:
        return g
      return g + (strength[m] * (p - a)).astype(g.dtype)

    out = jax.tree_util.tree_map_with_path(one, updates, params, state.anchor)
    fim = state.fim + fisher_traces(out, k)
    out, inner_state = inner.update(out, state.inner, params, **extra_args)
    return out, state._replace(inner=inner_state, fim=fim, strength=strength)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def epoch_update(state: InfoRegState, params, *, modality: int | None) -> InfoRegState:
  """Closes an epoch (host side): its traces join the history, the anchor becomes
  ``params``, the window test for the next epoch, the sums reset."""
  history = np.concatenate([np.asarray(state.history)[1:], np.asarray(state.fim)[None]], 0)
  epochs = int(state.epochs) + 1
  return state._replace(anchor=jax.tree.map(jnp.asarray, params),
                        fim=jnp.zeros_like(state.fim), history=jnp.asarray(history),
                        epochs=jnp.asarray(epochs, jnp.int32),
                        open=jnp.asarray(window_open(history, epochs, modality)))
