"""The released AGM code's conditional gradient-norm clip, as an optax transformation.

After the backward pass (and after AGM's coefficients have scaled the gradient) the released
code looks at the gradient of the fusion output layer's weight; if any entry leaves
``[-threshold, threshold]`` it clips the global norm of the whole gradient to ``max_norm``
(PyTorch's ``clip_grad_norm_``: ``g * min(1, max_norm / (||g|| + 1e-6))``)::

    fires = max(watched) > threshold or min(watched) < -threshold
    g     = g * min(1, max_norm / (||g||_2 + 1e-6))   if fires else g

CREMA-D, AV-MNIST and AVE use threshold = max_norm = 1, UR-Funny 5. It runs in every AGM run
and every early-fusion run of the released code and is the only guard on AGM's ``kappa``
(which can reach ``e^clip``). Chain it after the modulation transform and before weight
decay and the optimiser (PyTorch's SGD adds ``weight_decay * w`` inside ``step()``, after the
clip)::

    optax.chain(agm(alpha=1.0, num_modalities=2),
                clip_by_global_norm_if(1.0, 1.0, where=r"fusion/classifier[^/]*/kernel$"),
                optax.add_decayed_weights(1e-4), optax.sgd(1e-3, momentum=0.9))

``where`` selects the watched leaves: a regular expression searched in each leaf's path
joined by ``/`` (``"fusion/classifier/kernel"``), or a predicate on that string. The state
records whether the last update fired (``clipped``, logged by the trainer as the fraction of
steps that clipped) and how many updates fired in all (``count``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.transforms.common import check_value
from agm_jax.transforms.partition import entry_name

TORCH_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6)


class ConditionalClipState(NamedTuple):
  clipped: jax.Array  # float32 (): 1.0 if the last update was clipped, else 0.0
  count: jax.Array    # int32 (): updates clipped so far


def leaf_name(path) -> str:
  """A key path as ``"a/b/c"`` (dict keys, attribute names and indices alike)."""
  return "/".join(entry_name(entry) for entry in path)


def _matcher(where: str | Callable[[str], bool]) -> Callable[[str], bool]:
  if callable(where):
    return where
  pattern = re.compile(where)
  return lambda name: pattern.search(name) is not None


def watched_extremes(updates, where: str | Callable[[str], bool]) -> tuple[jax.Array, jax.Array]:
  """``(max, min)`` over every entry of the leaves ``where`` selects (ValueError if none)."""
  match = _matcher(where)
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(updates)
            if match(leaf_name(path))]
  if not leaves:
    names = [leaf_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(updates)]
    raise ValueError(f"clip_by_global_norm_if: no gradient leaf matches {where!r}; leaves: "
                     f"{', '.join(names[:8])}{' …' if len(names) > 8 else ''}")
  high = jnp.max(jnp.stack([jnp.max(x) for x in leaves])).astype(jnp.float32)
  low = jnp.min(jnp.stack([jnp.min(x) for x in leaves])).astype(jnp.float32)
  return high, low


def clip_by_global_norm_if(threshold: float, max_norm: float, *,
                           where: str | Callable[[str], bool]
                           ) -> optax.GradientTransformation:
  """Clips the global gradient norm to ``max_norm`` when a watched entry leaves
  ``[-threshold, threshold]`` (see the module docstring).

  Args:
    threshold: > 0; the watched entries' bound (strict: an entry equal to it does not fire).
    max_norm: > 0; the global norm after clipping (PyTorch's ``clip_grad_norm_``, with its
      ``1e-6``: a clipped gradient's norm is ``max_norm * n / (n + 1e-6)``).
    where: which leaves to watch (regex on ``"a/b/kernel"`` paths, or a predicate).
  """
  check_value("threshold", threshold, lambda t: t > 0, "must be > 0")
  check_value("max_norm", max_norm, lambda n: n > 0, "must be > 0")

  def init_fn(params):
    del params
    return ConditionalClipState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    high, low = watched_extremes(updates, where)
    fires = (high > threshold) | (low < -threshold)
    norm = optax.tree.norm(updates)
    scale = jnp.where(fires, jnp.minimum(1.0, max_norm / (norm + TORCH_EPS)), 1.0)
    clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
    return clipped, ConditionalClipState(fires.astype(jnp.float32),
                                         state.count + fires.astype(jnp.int32))

  return optax.GradientTransformation(init_fn, update_fn)
