"""Mono-modal responses: Shapley decomposition of a multimodal model's logits (AGM eq. 1-3).

Modalities are an ordered tuple ``(m_0 … m_{k-1})``; a subset is a bitmask ``s`` in
``0 … 2**k-1`` whose bit ``i`` means ``m_i`` is present. ``V[s]`` are the logits with every
absent modality replaced by a pad (zeros; or N(0,1) noise, the supplement's "rand-pad").
With ``w(n) = n!(k-n-1)!/k!``::

    phi^m = sum_{S ⊆ M\\{m}} w(|S|) * ( V[S ∪ {m}] - [S ≠ ∅] V[S] )        i.e.  phi = C @ V

the Shapley value with the empty coalition's output dropped, so ``sum_m phi^m = V[M]``
exactly. ``C`` is ``(k, 2**k)`` with a zero column for the empty set.

Everything here is a pure function of arrays; it knows nothing about models or training.
The AGM update (eq. 6) ``sum_m kappa^m VJP(phi^m, dL/dphi)`` is linear in the cotangent of
``V``, so :func:`shapley_vjp` returns a ``backward(kappa)`` that does it in ONE backward pass
with cotangent ``(C.T @ kappa)[s] * dL/dphi`` on subset ``s``; ``backward(e_m)`` is modality
m's own gradient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_MODALITIES = 10
PADS = ("zeros", "normal")


def check_num_modalities(k: int) -> int:
  """Returns ``k`` if 2 <= k <= MAX_MODALITIES, else raises ValueError (TypeError for a JAX
  array: ``k`` sets array shapes, so it must be a Python int, static under jit)."""
  if isinstance(k, (jax.Array, jax.core.Tracer)):
    raise TypeError(f"num_modalities must be a Python int (it sets array shapes), got {k!r}; "
                    "with optax.inject_hyperparams pass static_args=('num_modalities',)")
  if not isinstance(k, (int, np.integer)) or k < 2:
    raise ValueError(f"AGM needs at least 2 modalities, got {k!r}")
  if k > MAX_MODALITIES:
    raise ValueError(f"{k} modalities means 2**{k} subset passes; at most {MAX_MODALITIES} "
                     "are supported")
  return int(k)


@functools.cache
def _masks(k: int) -> np.ndarray:
  s = np.arange(2**k)[:, None]
  return ((s >> np.arange(k)[None, :]) & 1).astype(bool)


def subset_masks(k: int) -> np.ndarray:
  """Bool ``(2**k, k)``: row ``s`` has column ``i`` set iff bit ``i`` of ``s`` is set."""
  return _masks(check_num_modalities(k)).copy()


def shapley_weight(n: int, k: int) -> float:
  """``w(n) = n! (k-n-1)! / k!``: the weight of a coalition of size ``n`` without m."""
  return math.factorial(n) * math.factorial(k - n - 1) / math.factorial(k)


@functools.cache
def _coefficients(k: int) -> np.ndarray:
  masks = _masks(k)
  sizes = masks.sum(1)
  c = np.zeros((k, 2**k), np.float64)
  for m in range(k):
    for s in range(1, 2**k):
      if masks[s, m]:
        c[m, s] = shapley_weight(sizes[s] - 1, k)   # + w(|S|) V[S ∪ {m}], S = s \ {m}
      else:
        c[m, s] = -shapley_weight(sizes[s], k)      # - w(|S|) V[S], S = s
  return c


def coefficients(k: int) -> np.ndarray:
  """Float32 ``(k, 2**k)`` with ``phi = C @ V`` (empty-set column zero).

  Each column sums to 1 for the full set and to 0 for every other subset.
  """
  return _coefficients(check_num_modalities(k)).astype(np.float32)


def check_inputs(inputs: Mapping[str, Any], modalities: Sequence[str]) -> int:
  """Validates the inputs dict against the modality tuple; returns the batch size."""
  check_num_modalities(len(modalities))
  if len(set(modalities)) != len(modalities):
    raise ValueError(f"modalities must be distinct, got {tuple(modalities)}")
  missing = [m for m in modalities if m not in inputs]
  if missing:
    raise ValueError(f"inputs lack modality {missing[0]!r}; they have {sorted(inputs)} "
                     f"and the modalities are {tuple(modalities)}")
  sizes = {m: jnp.shape(inputs[m])[0] if jnp.ndim(inputs[m]) else None for m in modalities}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise ValueError(f"modalities have different batch sizes: {sizes}")
  return next(iter(sizes.values()))


def pad_like(x: jax.Array, pad: str, key: jax.Array | None) -> jax.Array:
  """The stand-in for an absent modality: zeros, or N(0,1) noise with ``key``."""
  if pad == "zeros":
    return jnp.zeros_like(x)
  if pad == "normal":
    if key is None:
      raise ValueError('pad="normal" needs a PRNG key')
    return jax.random.normal(key, jnp.shape(x), jnp.result_type(x))
  raise ValueError(f"unknown pad {pad!r}; valid: {list(PADS)}")


def pads_for(inputs: Mapping[str, Any], modalities: Sequence[str], pad: str,
             key: jax.Array | None) -> dict[str, jax.Array]:
  """One pad per modality (the same pad in every subset that lacks it)."""
  keys = jax.random.split(key, len(modalities)) if key is not None else [None] * len(modalities)
  return {m: pad_like(inputs[m], pad, kk) for m, kk in zip(modalities, keys)}


def subset_logits(fn: Callable[[dict], jax.Array], inputs: Mapping[str, Any],
                  modalities: Sequence[str], *, pad: str = "zeros",
                  key: jax.Array | None = None) -> jax.Array:
  """``V`` of shape ``(2**k, B, K)``: ``fn`` on every masked input, all subsets in ONE vmap.

  Keys of ``inputs`` that are not modalities (e.g. ``"text_lengths"``) pass through unmasked.
  """
  check_inputs(inputs, modalities)
  k = len(modalities)
  pads = pads_for(inputs, modalities, pad, key)

  def one(mask):
    x = dict(inputs)
    for i, m in enumerate(modalities):
      x[m] = jnp.where(mask[i], inputs[m], pads[m])
    return fn(x)

  return jax.vmap(one)(jnp.asarray(_masks(k)))


def responses(v: jax.Array) -> jax.Array:
  """``phi = C @ V``: ``(2**k, B, K) -> (k, B, K)`` (computed in float32)."""
  k = int(round(math.log2(v.shape[0])))
  if 2**k != v.shape[0]:
    raise ValueError(f"the leading axis of V must be 2**k, got {v.shape[0]}")
  return jnp.einsum("ks,s...->k...", coefficients(k), v.astype(jnp.float32))


def marginal_contributions(v: jax.Array) -> jax.Array:
  """The ordinary Shapley value ``phi^m - V[∅]/k`` (the released code's "marginal")."""
  k = int(round(math.log2(v.shape[0])))
  return responses(v) - v[0].astype(jnp.float32) / k


def mono_modal_responses(fn: Callable[[dict], jax.Array], inputs: Mapping[str, Any],
                         modalities: Sequence[str], *, pad: str = "zeros",
                         key: jax.Array | None = None) -> jax.Array:
  """``phi`` of shape ``(k, B, K)``: each modality's contribution to ``fn``'s logits."""
  return responses(subset_logits(fn, inputs, modalities, pad=pad, key=key))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example ``-log softmax(logits)[label]``; broadcasts over leading axes. Integer class
  labels only (float labels are scores: :func:`example_loss`)."""
  if jnp.issubdtype(labels.dtype, jnp.floating):
    raise ValueError("cross_entropy needs integer class labels; float labels are scores (a "
                     "regression task: example_loss)")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def task_of(outputs: jax.Array, labels: jax.Array) -> str:
  """The task a batch's labels say, from their dtype (static under jit): integer labels are
  class indices ("classification"), float labels real-valued scores ("regression", e.g.
  CMU-MOSEI sentiment in [-3, 3]), which need a model with one output unit."""
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    return "classification"
  if outputs.shape[-1] != 1:
    raise ValueError(f"float (score) labels need a model with 1 output unit (regression), got "
                     f"{outputs.shape[-1]}")
  return "regression"


def example_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss of the task (:func:`task_of`); broadcasts over leading axes.
  Classification: :func:`cross_entropy`. Regression: the absolute error ``|y_hat - y|`` of the
  one output (L1, the CMU-MOSEI literature's regression loss: MulT, Tsai et al. ACL 2019,
  ``src/main.py``'s ``L1Loss`` criterion for ``mosei_senti``; MMSA's regression trainers, e.g.
  ``trains/singleTask/MULT.py``, use ``nn.L1Loss``)."""
  if task_of(outputs, labels) == "classification":
    return cross_entropy(outputs, labels)
  return jnp.abs(outputs[..., 0].astype(jnp.float32) - labels.astype(jnp.float32))


def example_correct(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example correctness (bool): ``argmax == label`` for classification; for regression
  the has-zero Acc-2 decision, ``(y_hat >= 0) == (y >= 0)`` (``agm_jax.metrics.regression``)."""
  if task_of(outputs, labels) == "classification":
    return jnp.argmax(outputs, -1) == labels
  return (outputs[..., 0] >= 0) == (labels >= 0)


def check_p_floor(p_floor: float) -> float:
  """``p_floor`` as a float in ``[0, 1)``, else a ``ValueError``."""
  p_floor = float(p_floor)
  if not 0.0 <= p_floor < 1.0:
    raise ValueError(f"p_floor must be in [0, 1), got {p_floor}")
  return p_floor


def mono_modal_ce(phi: jax.Array, labels: jax.Array, *, p_floor: float = 0.0) -> jax.Array:
  """``ce^m``: batch mean cross-entropy of each modality's response, shape ``(k,)`` (for score
  labels the mean absolute error of ``phi^m``: :func:`example_loss`).

  ``p_floor`` > 0 floors each example's label probability at ``p_floor`` before the mean, i.e.
  caps its ``-log p`` at ``-log p_floor``: the released AGM code's reading (its CREMA-D, AVE,
  AV-MNIST and MOSEI mains replace ``p < 1e-8`` by 1e-8; its UR-Funny main has no floor).
  Eq. 4 of the paper has none: ``p_floor=0``. Score labels have no probability and ignore it.
  """
  p_floor = check_p_floor(p_floor)
  loss = example_loss(phi, labels[None])
  if p_floor > 0.0 and task_of(phi, labels) == "classification":
    loss = jnp.minimum(loss, -math.log(p_floor))
  return loss.mean(-1)


def mono_modal_accuracy(phi: jax.Array, labels: jax.Array) -> jax.Array:
  """``acc^m``: accuracy of ``argmax phi^m`` (score labels: Acc-2 of ``phi^m``), ``(k,)``."""
  return example_correct(phi, labels[None]).mean(-1)


class ShapleyForward(NamedTuple):
  """What the forward pass of :func:`shapley_vjp` computed (all float32)."""
  loss: jax.Array        # mean cross-entropy (scores: L1) of the full-input logits
  logits: jax.Array      # (B, K) = V[M] = sum_m phi^m
  mono_logits: jax.Array  # phi, (k, B, K)
  mono_ce: jax.Array     # (k,)
  mono_acc: jax.Array    # (k,)
  aux: Any               # whatever subsets_fn returned beside V


def subset_vjp(subsets_fn: Callable[[Any], Any], params: Any, *, has_aux: bool = False):
  """The subset passes and their pullback: ``(V, pullback, aux)``.

  ``V`` ``(2**k, B, K)`` is ``subsets_fn(params)`` (``(V, aux)`` with ``has_aux``);
  ``pullback(cotangent)`` takes a ``(2**k, B, K)`` cotangent on ``V`` (any float dtype; cast
  to V's) and returns the parameter gradient of ``sum(cotangent * V)`` in one VJP. Every
  method whose loss is a function of the subset logits (AGM's Shapley cotangent, G-Blending's
  weighted heads, Greedy's re-balancing loss) differentiates through this one helper.

  ``subsets_fn`` may instead return ``(V, extra_loss)`` (a scalar, e.g. a model's own auxiliary
  loss on the full pass): every pullback then also carries ``extra_loss``'s gradient, once and
  unscaled, from the same VJP.
  """
  if has_aux:
    out, vjp_fn, aux = jax.vjp(subsets_fn, params, has_aux=True)
  else:
    (out, vjp_fn), aux = jax.vjp(subsets_fn, params), None
  v, extra = out if isinstance(out, tuple) else (out, None)
  check_num_modalities(int(round(math.log2(v.shape[0]))))

  def pullback(cotangent: jax.Array):
    cotangent = jnp.asarray(cotangent).astype(v.dtype)
    return vjp_fn(cotangent if extra is None else (cotangent, jnp.ones_like(extra)))[0]

  return v, pullback, aux


def shapley_vjp(subsets_fn: Callable[[Any], Any], params: Any, labels: jax.Array, *,
                has_aux: bool = False, p_floor: float = 0.0):
  """Forward over all subsets, and a linear ``backward(kappa) -> grads`` of one VJP.

  Args:
    subsets_fn: ``params -> V`` of shape ``(2**k, B, K)`` (or ``(V, aux)`` with ``has_aux``).
    params: the pytree to differentiate.
    labels: int ``(B,)`` (or float scores: regression, see :func:`example_loss`).
    p_floor: the floor on the label probability in ``mono_ce`` only (:func:`mono_modal_ce`);
      the loss and its gradient are eq. 4's unfloored cross-entropy.
  Returns:
    ``(ShapleyForward, backward)``; ``backward(kappa)`` with ``kappa`` of shape ``(k,)`` is
    ``sum_m kappa[m] * VJP(phi^m, dL/dphi)`` for ``L`` the mean cross-entropy (scores: mean
    absolute error) of ``phi = sum_m phi^m``. ``backward(ones)`` is the ordinary joint gradient.
  """
  v, pullback, aux = subset_vjp(subsets_fn, params, has_aux=has_aux)
  k = int(round(math.log2(v.shape[0])))
  phi = responses(v)
  logits = v[-1].astype(jnp.float32)
  loss, dlogits = jax.value_and_grad(lambda z: example_loss(z, labels).mean())(logits)
  c = jnp.asarray(coefficients(k))

  def backward(kappa: jax.Array):
    weight = c.T @ jnp.asarray(kappa, jnp.float32)             # (2**k,)
    return pullback(weight[:, None, None] * dlogits[None])

  fwd = ShapleyForward(loss, logits, phi, mono_modal_ce(phi, labels, p_floor=p_floor),
                       mono_modal_accuracy(phi, labels), aux)
  return fwd, backward


def _subsets_of(logits_fn, inputs, modalities, pad, key):
  return lambda p: subset_logits(functools.partial(logits_fn, p), inputs, modalities,
                                 pad=pad, key=key)


def _aux(fwd: ShapleyForward) -> dict[str, jax.Array]:
  return dict(loss=fwd.loss, logits=fwd.logits, mono_logits=fwd.mono_logits,
              mono_ce=fwd.mono_ce, mono_acc=fwd.mono_acc)


def per_modality_grads(logits_fn: Callable[[Any, dict], jax.Array], params: Any,
                       inputs: Mapping[str, Any], labels: jax.Array,
                       modalities: Sequence[str], *, pad: str = "zeros",
                       key: jax.Array | None = None):
  """Each modality's share of the gradient: ``grads[m] = VJP(phi^m, dL/dphi)``.

  Returns ``(grads, aux)``: ``grads`` is params-shaped with a leading axis of size k (sum over
  it = the joint gradient); ``aux`` has ``loss``, ``logits``, ``mono_logits`` (k,B,K),
  ``mono_ce`` (k,), ``mono_acc`` (k,).
  """
  fwd, backward = shapley_vjp(_subsets_of(logits_fn, inputs, modalities, pad, key), params,
                              labels)
  grads = jax.vmap(backward)(jnp.eye(len(modalities), dtype=jnp.float32))
  return grads, _aux(fwd)


def modulated_grads(logits_fn: Callable[[Any, dict], jax.Array], params: Any,
                    inputs: Mapping[str, Any], labels: jax.Array, modalities: Sequence[str],
                    kappa: jax.Array | Callable[[jax.Array], jax.Array], *,
                    pad: str = "zeros", key: jax.Array | None = None):
  """``sum_m kappa[m] * grads[m]`` with ONE backward pass; returns ``(grads, aux)``.

  ``kappa`` is a ``(k,)`` array, or a function ``mono_ce -> kappa`` (AGM needs this step's
  mono-modal cross-entropies before it can weight the backward pass).
  """
  fwd, backward = shapley_vjp(_subsets_of(logits_fn, inputs, modalities, pad, key), params,
                              labels)
  kappa = kappa(fwd.mono_ce) if callable(kappa) else kappa
  return backward(kappa), dict(_aux(fwd), kappa=jnp.asarray(kappa, jnp.float32))
