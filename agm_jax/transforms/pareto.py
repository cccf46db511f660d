"""MMPareto's gradient integration (Wei & Hu, "MMPareto: Boosting Multimodal Learning with
Innocent Unimodal Assistance", ICML 2024; authors' code GeWu-Lab/MMPareto_ICML2024
``code/MMPareto.py``, ``code/min_norm_solvers.py``) as an optax transform: :func:`mmpareto`.

Input: two gradients stacked on a leading axis, ``[g_mm, g_uni]``: of the multimodal loss and
of the sum of the uni-modal losses (modality m's uni-modal loss reaches only m's encoder and
its own head, so on ``encoders_m`` ``g_uni`` is m's uni-modal gradient). For each modality's
encoder (all its leaves as one vector, ``partition.modality_index``):

* the two gradients agree (``cos(g_mm, g_u) > 0``): weights ``(1/2, 1/2)``;
* they conflict: the min-norm point of their convex hull (MGDA's two-task closed form,
  :func:`min_norm_weights`): ``c = clip((g_u.g_u - g_mm.g_u) / ||g_mm - g_u||^2)``, weights
  ``(c, 1 - c)``;

then per leaf ``d = 2 (w_mm g_mm + w_u g_u)``, and the magnitude rule: where the plain sum
``g_mm + g_u`` of that leaf is longer than ``d``, ``d`` is rescaled to its length; finally
``gamma d`` (``gamma`` 1.5 in the code). Every other leaf (the fusion head, the uni-modal
heads) gets the plain sum ``g_mm + g_uni``; so does every leaf when ``tx.update``'s ``active``
is false (outside a method's window). Any number of modalities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.transforms import partition
from agm_jax.transforms.common import check_extra_args

# min_norm_solvers.py's clamps of the degenerate cases (one vector inside the other's
# projection): 0.999 and 0.001 rather than 1 and 0.
MGDA_CLAMP = (0.001, 0.999)


def min_norm_weights(v1v1, v1v2, v2v2) -> jax.Array:
  """``(c, 1 - c)``: the point ``c x1 + (1 - c) x2`` of least norm from the dot products
  (``_min_norm_element_from2``)."""
  c = (v2v2 - v1v2) / jnp.maximum(v1v1 + v2v2 - 2.0 * v1v2, 1e-30)
  c = jnp.where(v1v2 >= v1v1, MGDA_CLAMP[1], jnp.where(v1v2 >= v2v2, MGDA_CLAMP[0], c))
  return jnp.stack([c, 1.0 - c])


def pareto_weights(v1v1, v1v2, v2v2) -> jax.Array:
  """``(w_mm, w_u)``: ``(1/2, 1/2)`` when the cosine is positive, else :func:`min_norm_weights`."""
  agree = v1v2 > 0
  return jnp.where(agree, jnp.asarray([0.5, 0.5]), min_norm_weights(v1v1, v1v2, v2v2))


class ParetoState(NamedTuple):
  weight: jax.Array   # (k,) the multimodal gradient's weight w_mm per encoder, last step
  cosine: jax.Array   # (k,) cos(g_mm, g_u) per encoder, last step


def _dots(pairs, k):
  """Per modality ``(g1.g1, g1.g2, g2.g2)`` over its encoder's leaves."""
  out = jnp.zeros((k, 3), jnp.float32)
  for m, g1, g2 in pairs:
    if m < 0:
      continue
    g1, g2 = g1.astype(jnp.float32), g2.astype(jnp.float32)
    out = out.at[m].add(jnp.stack([jnp.vdot(g1, g1), jnp.vdot(g1, g2), jnp.vdot(g2, g2)]))
  return out


def mmpareto(*, num_modalities: int, gamma: float = 1.5) -> optax.GradientTransformationExtraArgs:
  """MMPareto's integration of ``[g_mm, g_uni]`` (a leading axis of 2) into one update (see the
  module docstring); the state logs each encoder's ``weight`` and ``cosine``."""
  if num_modalities < 1:
    raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
  if gamma <= 0:
    raise ValueError(f"gamma must be > 0, got {gamma}")
  k = num_modalities

  def init_fn(params):
    del params
    return ParetoState(jnp.full((k,), 0.5, jnp.float32), jnp.zeros((k,), jnp.float32))

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    del params
    check_extra_args(extra_args, "mmpareto")
    leaves = jax.tree_util.tree_leaves_with_path(updates)
    for path, g in leaves:
      if g.shape[:1] != (2,):
        raise ValueError(f"mmpareto takes [g_mm, g_uni] stacked on a leading axis of 2; leaf "
                         f"{jax.tree_util.keystr(path)} has shape {g.shape}")
    index = [partition.modality_index(path) for path, _ in leaves]
    if any(i >= k for i in index):
      raise ValueError(f"a parameter belongs to encoder {max(index)} but num_modalities={k}")
    dots = _dots([(i, g[0], g[1]) for i, (_, g) in zip(index, leaves)], k)
    weights = jax.vmap(pareto_weights)(dots[:, 0], dots[:, 1], dots[:, 2])        # (k, 2)
    cosine = dots[:, 1] / jnp.maximum(jnp.sqrt(dots[:, 0] * dots[:, 2]), 1e-30)

    def one(i, g):
      plain = g[0] + g[1]
      if i < 0:
        return plain
      return jnp.where(active, integrated(i, g, plain), plain)

    def integrated(i, g, plain):
      w = weights[i].astype(g.dtype)
      d = 2.0 * (w[0] * g[0] + w[1] * g[1])
      plain_norm = jnp.linalg.norm(plain.astype(jnp.float32))
      d_norm = jnp.linalg.norm(d.astype(jnp.float32))
      ratio = plain_norm / jnp.maximum(d_norm, 1e-30)
      scale = jnp.where(ratio > 1.0, ratio, 1.0).astype(g.dtype)
      return gamma * scale * d

    treedef = jax.tree.structure(updates)
    out = jax.tree.unflatten(treedef, [one(i, g) for i, (_, g) in zip(index, leaves)])
    kept = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return out, ParetoState(kept(weights[:, 0], state.weight), kept(cosine, state.cosine))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
