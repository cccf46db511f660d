"""Helpers every agm-jax transform shares: the batch statistic, the running mean, the
combination of per-modality gradients, the check of ``tx.update``'s keyword arguments, and the
checks that make the transforms compose with optax's wrappers (docs/COMPOSING.md).

``optax.chain`` hands every keyword argument of ``tx.update`` to every transform in the chain,
so a transform must accept the keywords its neighbours need. It must not accept a misspelt
one silently: :func:`check_extra_args` rejects any keyword that no agm-jax transform (and no
optax transform we know of) reads, and :func:`require_extra_arg` says what to use when a
caller (flax's ``TrainState``) dropped a keyword a transform needs.

Hyper-parameters may be traced: ``optax.inject_hyperparams`` rebuilds a transform inside
``update`` with its numeric hyper-parameters as arrays (tracers under ``jit``/``vmap``), so a
factory validates a value only when it is concrete (:func:`check_value`).

``agm`` and ``blend`` take per-modality gradients (a leading axis) or a linear function and
return parameter-shaped updates; :func:`check_per_modality` turns the cryptic failures of a
wrapper placed *around* them into one error naming the composition that works.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

# Every keyword some agm-jax transform reads in ``update``, and the ones optax's own transforms
# read (line searches: value, grad, value_fn; reduce_on_plateau: value).
EXTRA_ARGS = frozenset({"mono_ce", "scores", "utilisation", "active", "trained", "advance",
                        "value", "grad", "value_fn"})


def check_extra_args(extra_args: Mapping[str, Any], transform: str) -> None:
  """Raises ``TypeError`` for a keyword argument no transform knows (a misspelling)."""
  unknown = sorted(set(extra_args) - EXTRA_ARGS)
  if unknown:
    raise TypeError(f"{transform}.update() got unknown keyword argument(s) "
                    f"{', '.join(map(repr, unknown))}; the agm-jax transforms read "
                    f"{', '.join(sorted(EXTRA_ARGS))}")


def require_extra_arg(value: Any, name: str, transform: str, what: str) -> None:
  """Raises ``TypeError`` when a keyword argument ``transform`` needs did not reach it."""
  if value is None:
    raise TypeError(f"{transform}.update() needs the keyword argument {name}= ({what}); "
                    "whatever called tx.update dropped it. flax's TrainState.apply_gradients "
                    "does not forward keyword arguments to tx.update: use "
                    "agm_jax.compat.ModulatedTrainState or "
                    "agm_jax.compat.apply_modulated_gradients (docs/COMPOSING.md)")


def is_traced(value: Any) -> bool:
  """Whether ``value`` is a tracer (a hyper-parameter injected by ``optax.inject_hyperparams``
  and traced by ``jit``/``vmap``): its value is unknown until run time."""
  return isinstance(value, jax.core.Tracer)


def check_value(name: str, value: Any, ok: Callable[[Any], Any], requirement: str) -> None:
  """``ValueError(f"{name} {requirement}, got {value}")`` if ``value`` is concrete (a Python
  number or a concrete array) and ``ok(value)`` is false; a traced value is not checked."""
  if not is_traced(value) and not ok(value):
    raise ValueError(f"{name} {requirement}, got {value}")


# The optax modules whose wrappers trace their inner transformation's update in a ``lax.cond``
# whose other branch returns buffers shaped like the update's *input* (MultiSteps,
# apply_if_finite, conditionally_mask, conditionally_transform): around agm that never works.
_CONDITIONAL_WRAPPERS = tuple(os.path.join("optax", "transforms", name)
                              for name in ("_accumulation.py", "_conditionality.py"))
# What to write instead, per wrapper (the base optimiser wrapped after the modulation).
_WRAPPER_EXAMPLES = {
    "MultiSteps": "optax.MultiSteps(optax.sgd(...), k)",
    "apply_if_finite": "optax.apply_if_finite(optax.sgd(...), n)",
    "conditionally_mask": "optax.conditionally_mask(optax.sgd(...), fn)",
    "conditionally_transform": "optax.conditionally_transform(optax.sgd(...), fn)",
}


def _enclosing_conditional_wrapper() -> str | None:
  """The optax conditional wrapper whose ``update`` is on the call stack, if any: a trace-time
  look at the Python callers (cheap), used only by a transform that cannot work inside one."""
  frame = sys._getframe(2)
  for _ in range(64):
    if frame is None:
      return None
    code = frame.f_code
    if os.path.normpath(code.co_filename).endswith(_CONDITIONAL_WRAPPERS):
      qualname = getattr(code, "co_qualname", code.co_name)   # co_qualname: Python >= 3.11
      return qualname.split(".")[0]
    frame = frame.f_back
  return None


def check_per_modality(updates: Any, params: Any, n: int, transform: str,
                       expects: str) -> None:
  """Checks at trace time that ``updates`` carry a leading axis of size ``n`` (or are a linear
  function of the coefficients) and that no optax conditional wrapper encloses ``transform``.

  What it catches: a wrapper placed around the modulation (``optax.MultiSteps``,
  ``optax.apply_if_finite``) hands it parameter-shaped buffers, or needs its output shaped
  like its input. Raises ``ValueError`` naming the composition that works; ``expects``
  describes the input (``"per-modality gradients (leading axis k=2) or …"``).
  """
  detail = None
  if not is_linear_function(updates):
    leaves = jax.tree_util.tree_leaves_with_path(updates)
    same_tree = params is not None and jax.tree.structure(params) == jax.tree.structure(updates)
    param_shapes = ([jnp.shape(p) for p in jax.tree.leaves(params)] if same_tree
                    else [None] * len(leaves))
    if same_tree and leaves and all(jnp.shape(g) == s for (_, g), s in zip(leaves, param_shapes)):
      detail = "got updates shaped like the parameters"
    else:
      for (path, g), p_shape in zip(leaves, param_shapes):
        shape = jnp.shape(g)
        want = (n, *shape[1:]) if p_shape is None else (n, *p_shape)
        if shape != want:
          detail = (f"got a leaf {jax.tree_util.keystr(path)} of shape {shape}"
                    + ("" if p_shape is None else f" for a parameter of shape {p_shape}"))
          break
  wrapper = _enclosing_conditional_wrapper()
  if detail is None:
    if wrapper is None:
      return
    detail = (f"it was called inside optax's {wrapper}, which needs updates shaped like its "
              f"input, but {transform} returns parameter-shaped ones")
  example = _WRAPPER_EXAMPLES.get(wrapper, _WRAPPER_EXAMPLES["MultiSteps"])
  raise ValueError(
      f"{transform} expects {expects}; {detail} — wrappers such as optax.MultiSteps / "
      f"optax.apply_if_finite must wrap the base optimiser after {transform}: "
      f"optax.chain({transform}(...), {example}) (docs/COMPOSING.md)")


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


def is_linear_function(updates: Any) -> bool:
  """Whether ``updates`` is the linear function form (``kappa -> grads``): a callable that is a
  pytree leaf (a function or closure) or a ``jax.tree_util.Partial``. A callable pytree with
  array leaves (an Equinox module of stacked gradients) is a gradient tree."""
  return isinstance(updates, jax.tree_util.Partial) or (
      callable(updates) and jax.tree_util.treedef_is_leaf(jax.tree.structure(updates)))


def combine(updates: Any, kappa: jax.Array) -> Any:
  """``sum_m kappa[m] * updates[m]``: stacked pytree (leading axis k) or linear function."""
  if is_linear_function(updates):
    return updates(kappa)
  return jax.tree.map(lambda g: jnp.tensordot(kappa.astype(g.dtype), g, axes=1), updates)
