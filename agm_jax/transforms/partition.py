"""Which modality a parameter belongs to: the one per-modality partition every method uses.

A parameter whose path passes through a module named ``encoders_<i>`` belongs to modality
``i`` (``MultimodalClassifier`` names modality i's encoder that way); anything else (the
fusion head, an input-level encoder) is *shared* (:data:`SHARED`, -1)::

    modality_index(("encoders_1", "Dense_0", "kernel"))  # 1
    modality_index(("fusion", "classifier", "kernel"))   # -1

Works on ``jax.tree_util`` key paths and on tuples of strings, so a foreign trainer whose
params nest the model one level deeper (``{"params": {"encoders_0": …}}``) partitions the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

SHARED = -1
_ENCODER = re.compile(r"^encoders_(\d+)$")


def _name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def modality_index(path: Sequence[Any]) -> int:
  """The modality index of a parameter path (``encoders_<i>`` -> i), or ``SHARED``."""
  for entry in path:
    match = _ENCODER.match(_name(entry))
    if match:
      return int(match.group(1))
  return SHARED


def modality_labels(tree: Any) -> Any:
  """A pytree of Python ints with ``tree``'s structure: each leaf's modality index."""
  return jax.tree_util.tree_map_with_path(lambda p, _: modality_index(p), tree)


def _checked(path, k: int) -> int:
  i = modality_index(path)
  if i >= k:
    raise ValueError(f"parameter {jax.tree_util.keystr(tuple(path))} belongs to encoders_{i} "
                     f"but only {k} modality coefficients were given")
  return i


def scale_by_modality(tree: Any, coeff: jax.Array) -> Any:
  """Multiplies each leaf of modality i by ``coeff[i]``; shared leaves are unchanged."""
  coeff = jnp.asarray(coeff)
  k = coeff.shape[0]

  def one(path, g):
    i = _checked(path, k)
    return g if i == SHARED else g * coeff[i].astype(g.dtype)

  return jax.tree_util.tree_map_with_path(one, tree)


def select_by_modality(on: jax.Array, new: Any, old: Any) -> Any:
  """Leaf-wise ``new if on[i] else old`` for leaves of modality i; shared leaves keep ``old``."""
  on = jnp.asarray(on)
  k = on.shape[0]

  def one(path, a, b):
    i = _checked(path, k)
    return b if i == SHARED else jnp.where(on[i], a, b)

  return jax.tree_util.tree_map_with_path(one, new, old)


def count_by_modality(tree: Any, k: int) -> list[int]:
  """How many leaves each modality owns (a check that the partition found the encoders)."""
  counts = [0] * k
  for path, _ in jax.tree_util.tree_leaves_with_path(tree):
    i = _checked(path, k)
    if i != SHARED:
      counts[i] += 1
  return counts
