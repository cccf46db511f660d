"""Which modality a parameter belongs to: the one per-modality partition every method uses.

A parameter whose path passes through a module named ``encoders_<i>`` belongs to modality
``i`` (``MultimodalClassifier`` names modality i's encoder that way); anything else (the
fusion head, an input-level encoder) is *shared* (:data:`SHARED`, -1)::

    modality_index(("encoders_1", "Dense_0", "kernel"))  # 1
    modality_index(("fusion", "classifier", "kernel"))   # -1

Works on ``jax.tree_util`` key paths and on tuples of strings, so a foreign trainer whose
params nest the model one level deeper (``{"params": {"encoders_0": …}}``) partitions the same.

**Scopes.** Which of modality i's leaves a per-modality coefficient (and OGM-GE's noise)
touches differs between the released codes; :data:`SCOPES` names the readings
(:func:`scope_index`):

* ``"encoder"``: every leaf under ``encoders_<i>`` (the default of ``scale_by_modality``).
* ``"branch"``: those and the late-fusion head's per-modality output block
  ``classifier_<i>`` (``SumFusion``'s ``Dense`` for modality i) — the released AGM code's
  ``audio_net``/``audio_cls`` (CREMA-D) and ``audio_encoder``/``audio_cls`` (AV-MNIST,
  UR-Funny) of its sum-fusion baseline models. A head without such blocks (``ConcatFusion``'s
  one ``classifier``) leaves ``"branch"`` equal to ``"encoder"``.
* ``"conv"``: only the 4-D (convolution) kernels under ``encoders_<i>`` — the OGM-GE
  repository's ``len(grad.size()) == 4`` test; an MLP or Transformer encoder has none.
* ``"mixed"``: scale every leaf under ``encoders_<i>``, GE noise only on its ndim >= 2 leaves
  (weight matrices and kernels): agm-jax's earlier reading, which matches no released code.

    branch_index(("fusion", "classifier_1", "kernel"))  # 1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

SHARED = -1
_ENCODER = re.compile(r"^encoders_(\d+)$")
_HEAD_BLOCK = re.compile(r"^classifier_(\d+)$")
SCOPES = ("encoder", "branch", "conv", "mixed")


def entry_name(entry: Any) -> str:
  """One key-path entry's name (a dict key, an attribute name or an index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def modality_index(path: Sequence[Any]) -> int:
  """The modality index of a parameter path (``encoders_<i>`` -> i), or ``SHARED``."""
  for entry in path:
    match = _ENCODER.match(entry_name(entry))
    if match:
      return int(match.group(1))
  return SHARED


def branch_index(path: Sequence[Any]) -> int:
  """``encoders_<i>`` or a late head's per-modality block ``classifier_<i>`` -> i, else
  ``SHARED``."""
  for entry in path:
    name = entry_name(entry)
    match = _ENCODER.match(name) or _HEAD_BLOCK.match(name)
    if match:
      return int(match.group(1))
  return SHARED


def check_scope(scope: str, valid: Sequence[str] = SCOPES) -> str:
  if scope not in valid:
    raise ValueError(f"scope {scope!r} is unknown; valid: {list(valid)}")
  return scope


def scope_index(path: Sequence[Any], leaf: Any, scope: str, *, noise: bool = False) -> int:
  """The modality whose coefficient (``noise``: whose GE noise) the leaf at ``path`` gets
  under ``scope`` (module docstring), or ``SHARED``."""
  if scope == "encoder":
    return modality_index(path)
  if scope == "branch":
    return branch_index(path)
  check_scope(scope)
  i = modality_index(path)
  if scope == "conv":
    return i if jnp.ndim(leaf) == 4 else SHARED
  return i if not noise or jnp.ndim(leaf) >= 2 else SHARED   # "mixed"


def modality_labels(tree: Any) -> Any:
  """A pytree of Python ints with ``tree``'s structure: each leaf's modality index."""
  return jax.tree_util.tree_map_with_path(lambda p, _: modality_index(p), tree)


def _checked(path, leaf, k: int, scope: str = "encoder") -> int:
  i = scope_index(path, leaf, scope)
  if i >= k:
    raise ValueError(f"parameter {jax.tree_util.keystr(tuple(path))} belongs to modality {i} "
                     f"but only {k} modality coefficients were given")
  return i


def scale_by_modality(tree: Any, coeff: jax.Array, *, scope: str = "encoder") -> Any:
  """Multiplies each leaf of modality i (under ``scope``) by ``coeff[i]``; the other leaves
  are unchanged."""
  coeff = jnp.asarray(coeff)
  k = coeff.shape[0]

  def one(path, g):
    i = _checked(path, g, k, scope)
    return g if i == SHARED else g * coeff[i].astype(g.dtype)

  return jax.tree_util.tree_map_with_path(one, tree)


def select_by_modality(on: jax.Array, new: Any, old: Any, *, scope: str = "encoder",
                       shared: str = "old") -> Any:
  """Leaf-wise ``new if on[i] else old`` for leaves of modality i (under ``scope``); the other
  leaves keep ``old`` (``shared="new"``: take ``new``)."""
  on = jnp.asarray(on)
  k = on.shape[0]
  if shared not in ("old", "new"):
    raise ValueError(f"shared must be 'old' or 'new', got {shared!r}")

  def one(path, a, b):
    i = _checked(path, a, k, scope)
    if i == SHARED:
      return b if shared == "old" else a
    return jnp.where(on[i], a, b)

  return jax.tree_util.tree_map_with_path(one, new, old)


def count_by_modality(tree: Any, k: int, *, scope: str = "encoder") -> list[int]:
  """How many leaves each modality owns under ``scope`` (a check that the partition found
  them)."""
  counts = [0] * k
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    i = _checked(path, leaf, k, scope)
    if i != SHARED:
      counts[i] += 1
  return counts
