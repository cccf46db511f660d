"""Gradient modulation as optax transformations, and their pure coefficient functions.

AGM (Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation",
ICCV 2023), Algorithm 1 with the sign convention of the released code (``ce`` is a loss:
lower = stronger modality). At global step ``t = 1, 2, …`` with running means ``r̂ce``
(0 before the first step)::

    r^m     = exp( (mean_j ce^j  - ce^m)  * k/(k-1) )
    tau^m   = exp( (mean_j r̂ce^j - r̂ce^m) * k/(k-1) )     # reference="one": tau^m = 1
    kappa^m = exp( alpha * min(tau^m - r^m, clip) )
    r̂ce^m  <- r̂ce^m * (t-1)/t + ce^m / t                  # after kappa is computed

and the update (eq. 6) is ``g = sum_m kappa^m g^m`` with ``g^m`` modality m's share of the
gradient (``agm_jax.shapley``). The transform takes either the stacked per-modality
gradients (leading axis k) or a linear function ``kappa -> sum_m kappa^m g^m`` (the
single-backward form, ``shapley.shapley_vjp``'s ``backward``)::

    tx = optax.chain(agm(alpha=1.0, num_modalities=2), optax.sgd(1e-3, momentum=0.9))
    updates, opt_state = tx.update(per_modality_grads, opt_state, params, mono_ce=ce)

Also here: OGM-GE's generalisation enhancement (:func:`ge_noise`, "AGM-GE" chains it after
``agm``). The comparison methods' transforms live beside this module:
``agm_jax.modulation_ogm`` (OGM-GE, OGM-GE-RA, OGM, OPM: score-ratio coefficients) and
``agm_jax.modulation_epoch`` (MSLR, MSES, G-Blending: coefficients updated at epoch end).
Which parameters are modality m's: ``agm_jax.partition``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.partition import SHARED, modality_index
from agm_jax.shapley import check_num_modalities

REFERENCES = ("running_mean", "one")


def _centred_exp(x: jax.Array) -> jax.Array:
  """``exp((mean_j x^j - x^m) * k/(k-1))`` over the last axis."""
  k = x.shape[-1]
  return jnp.exp((x.mean(-1, keepdims=True) - x) * (k / (k - 1)))


def agm_coefficients(mono_ce: jax.Array, running_ce: jax.Array, *, alpha: float,
                     clip: float, reference: str = "running_mean") -> jax.Array:
  """AGM's ``kappa`` of shape ``(k,)`` from this step's and the running mono-modal CE.

  For k = 2 this is the released code's
  ``kappa_a = exp(alpha * min(exp(rce_v - rce_a) - exp(ce_v - ce_a), clip))``.
  """
  mono_ce = jnp.asarray(mono_ce, jnp.float32)
  r = _centred_exp(mono_ce)
  if reference == "running_mean":
    tau = _centred_exp(jnp.asarray(running_ce, jnp.float32))
  elif reference == "one":
    tau = jnp.ones_like(r)
  else:
    raise ValueError(f"unknown AGM reference {reference!r}; valid: {list(REFERENCES)}")
  return jnp.exp(alpha * jnp.minimum(tau - r, clip))


def running_mean(mean: jax.Array, value: jax.Array, count: jax.Array) -> jax.Array:
  """Cumulative mean after ``count`` (>= 1) values: ``mean*(t-1)/t + value/t``."""
  t = jnp.asarray(count, jnp.float32)
  return mean * ((t - 1.0) / t) + value / t


def batch_statistic(value, k: int, name: str, axis_name: str | None) -> jax.Array:
  """A per-modality batch statistic (``(k,)``) as a constant, averaged over ``axis_name``."""
  value = jax.lax.stop_gradient(jnp.asarray(value, jnp.float32))
  if value.shape != (k,):
    raise ValueError(f"{name} must have shape ({k},), got {value.shape}")
  return value if axis_name is None else jax.lax.pmean(value, axis_name)


def combine(updates: Any, kappa: jax.Array) -> Any:
  """``sum_m kappa[m] * updates[m]``: stacked pytree (leading axis k) or linear function."""
  if callable(updates):
    return updates(kappa)
  return jax.tree.map(lambda g: jnp.tensordot(kappa.astype(g.dtype), g, axes=1), updates)


class AGMState(NamedTuple):
  """AGM's state: checkpoint it with the optimiser (the running mean spans the whole run)."""
  running_ce: jax.Array  # (k,) cumulative mean of the mono-modal cross-entropies
  count: jax.Array       # int32 (): steps seen, t
  kappa: jax.Array       # (k,) the coefficients of the last update (for logging)


def agm(alpha: float, clip: float = 10.0, *, num_modalities: int,
        reference: str = "running_mean",
        axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """Adaptive Gradient Modulation (ICCV 2023) as an optax gradient transformation.

  ``update(per_modality_grads, state, params=None, *, mono_ce, active=True)`` returns
  ``(sum_m kappa^m g^m, new_state)``. ``kappa`` uses the running mean *before* this step's
  update; ``active=False`` (outside the modulation window) gives kappa = 1 while the running
  mean still updates. With ``axis_name`` (inside ``pmap``/``shard_map``) ``mono_ce`` is
  ``pmean``-ed first so every device uses the global batch's kappa; the gradients are not
  averaged here (do that in the trainer, as for any optimiser).

  Args:
    alpha: modulation strength, >= 0 (0 = plain joint training).
    clip: upper bound of ``tau - r`` in the exponent, > 0 (10 for CREMA-D, 7 for UR-Funny).
    num_modalities: k >= 2.
    reference: "running_mean" (AGM) or "one" (the AGM(1) ablation, Table 8).
    axis_name: a mapped axis to average ``mono_ce`` over.
  """
  k = check_num_modalities(num_modalities)
  if not alpha >= 0:
    raise ValueError(f"AGM alpha must be >= 0, got {alpha}")
  if not clip > 0:
    raise ValueError(f"AGM clip must be > 0, got {clip}")
  if reference not in REFERENCES:
    raise ValueError(f"unknown AGM reference {reference!r}; valid: {list(REFERENCES)}")

  def init_fn(params):
    del params
    return AGMState(jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.int32),
                    jnp.ones((k,), jnp.float32))

  def update_fn(updates, state, params=None, *, mono_ce, active=True, **extra_args):
    del params, extra_args
    mono_ce = batch_statistic(mono_ce, k, "mono_ce", axis_name)
    kappa = agm_coefficients(mono_ce, state.running_ce, alpha=alpha, clip=clip,
                             reference=reference)
    kappa = jnp.where(active, kappa, jnp.ones_like(kappa))
    count = state.count + 1
    new_state = AGMState(running_mean(state.running_ce, mono_ce, count), count, kappa)
    return combine(updates, kappa), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- GE noise


def _std(g: jax.Array) -> jax.Array:
  """``torch.Tensor.std()``: the unbiased standard deviation (biased for a single element)."""
  return jnp.std(g.astype(jnp.float32), ddof=1 if g.size > 1 else 0)


def is_encoder_kernel(path, leaf) -> bool:
  """A weight matrix / conv kernel (ndim >= 2) of some modality's encoder."""
  return modality_index(path) != SHARED and jnp.ndim(leaf) >= 2


def add_ge_noise(updates: Any, key: jax.Array, *, reference: Any = None,
                 enabled: jax.Array | bool = True) -> Any:
  """``g + N(0, std(r) + 1e-8)`` on every encoder kernel, ``r`` the matching leaf of
  ``reference`` (default: ``updates``); other leaves unchanged. One fresh key per leaf."""
  reference = updates if reference is None else reference
  leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
  refs = treedef.flatten_up_to(reference)
  keys = jax.random.split(key, max(len(leaves), 1))
  on = jnp.asarray(enabled, jnp.float32)
  out = []
  for (path, g), r, kk in zip(leaves, refs, keys):
    if is_encoder_kernel(path, g):
      noise = jax.random.normal(kk, jnp.shape(g), jnp.float32) * (_std(r) + 1e-8)
      g = g + (on * noise).astype(g.dtype)
    out.append(g)
  return jax.tree_util.tree_unflatten(treedef, out)


class GENoiseState(NamedTuple):
  noise_key: jax.Array   # raw uint32 PRNG key, split every step


def ge_noise(seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """OGM-GE's generalisation enhancement (Peng et al., CVPR 2022) as a transform.

  ``update(grads, state, params=None, *, active=True)`` adds ``N(0, std(g) + 1e-8)`` to each
  encoder kernel ``g`` (parameters under ``encoders_<i>`` with ndim >= 2: the released code
  does it for the 4-D conv kernels; MLP encoders have 2-D ones), only while ``active``. The
  key lives in the state (checkpointed), so every data-parallel replica draws the same noise.
  """
  def init_fn(params):
    del params
    return GENoiseState(jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    del params, extra_args
    key, sub = jax.random.split(state.noise_key)
    return add_ge_noise(updates, sub, enabled=active), GENoiseState(key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
