"""Helpers every agm-jax transform shares: the batch statistic, the running mean, the
combination of per-modality gradients, and the check of ``tx.update``'s keyword arguments.

``optax.chain`` hands every keyword argument of ``tx.update`` to every transform in the chain,
so a transform must accept the keywords its neighbours need. It must not accept a misspelt
one silently: :func:`check_extra_args` rejects any keyword that no agm-jax transform (and no
optax transform we know of) reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

# Every keyword some agm-jax transform reads in ``update``, and the ones optax's own transforms
# read (line searches: value, grad, value_fn; reduce_on_plateau: value).
EXTRA_ARGS = frozenset({"mono_ce", "scores", "utilisation", "active",
                        "value", "grad", "value_fn"})


def check_extra_args(extra_args: Mapping[str, Any], transform: str) -> None:
  """Raises ``TypeError`` for a keyword argument no transform knows (a misspelling)."""
  unknown = sorted(set(extra_args) - EXTRA_ARGS)
  if unknown:
    raise TypeError(f"{transform}.update() got unknown keyword argument(s) "
                    f"{', '.join(map(repr, unknown))}; the agm-jax transforms read "
                    f"{', '.join(sorted(EXTRA_ARGS))}")


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
