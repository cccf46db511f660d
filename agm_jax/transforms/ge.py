"""OGM-GE's generalisation enhancement (Peng et al., "Balanced Multimodal Learning via
On-the-fly Gradient Modulation", CVPR 2022) as an optax transformation and a pure function.

Every encoder kernel ``g`` (a parameter under ``encoders_<i>`` with ndim >= 2,
``transforms.partition``) becomes ``g + N(0, std(g) + 1e-8)``, std the unbiased one of
``torch.Tensor.std()``. ``scope`` picks other leaves (``partition.SCOPES``): ``"conv"`` the
4-D kernels only (the OGM-GE repository), ``"branch"``/``"encoder"`` every leaf of the
modality's branch/encoder (the released AGM code's CREMA-D OGM-GE); the default ``"mixed"``
is the ndim >= 2 rule above. AGM-GE (AGM paper, Table 8) chains it after ``agm``; the score-ratio
family (``transforms.score_ratio``) calls :func:`add_ge_noise` itself.

Paper and code differ: the T-PAMI 2024 OGM/OPM paper (Sec. 3.2.2, eq. 16) draws
``h ~ N(0, Sigma / |B|)``, the covariance of the mini-batch sampling noise of ``g``; both
released codes draw ``normal_(0, grad.std() + 1e-8)``, one scale for the whole tensor, the
spread of its entries (GeWu-Lab/OGM-GE_CVPR2022 ``main.py`` l. 139, 146;
GeWu-Lab/BML_TPAMI2024 ``code/main.py`` l. 160, 167). We follow the code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.transforms.common import check_extra_args
from agm_jax.transforms.partition import SHARED, check_scope, modality_index, scope_index


def _std(g: jax.Array) -> jax.Array:
  """``torch.Tensor.std()``: the unbiased standard deviation (biased for a single element)."""
  return jnp.std(g.astype(jnp.float32), ddof=1 if g.size > 1 else 0)


def is_encoder_kernel(path, leaf) -> bool:
  """A weight matrix / conv kernel (ndim >= 2) of some modality's encoder."""
  return modality_index(path) != SHARED and jnp.ndim(leaf) >= 2


def add_ge_noise(updates: Any, key: jax.Array, *, reference: Any = None,
                 enabled: jax.Array | bool = True, scope: str = "mixed") -> Any:
  """``g + N(0, std(r) + 1e-8)`` on every leaf ``scope`` gives noise (default: every encoder
  kernel), ``r`` the matching leaf of ``reference`` (default: ``updates``); other leaves
  unchanged. One fresh key per leaf."""
  check_scope(scope)
  reference = updates if reference is None else reference
  leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
  refs = treedef.flatten_up_to(reference)
  keys = jax.random.split(key, max(len(leaves), 1))
  on = jnp.asarray(enabled, jnp.float32)
  out = []
  for (path, g), r, kk in zip(leaves, refs, keys):
    if scope_index(path, g, scope, noise=True) != SHARED:
      noise = jax.random.normal(kk, jnp.shape(g), jnp.float32) * (_std(r) + 1e-8)
      g = g + (on * noise).astype(g.dtype)
    out.append(g)
  return jax.tree_util.tree_unflatten(treedef, out)


class GENoiseState(NamedTuple):
  noise_key: jax.Array   # raw uint32 PRNG key, split every step


def ge_noise(seed: int = 0, *, scope: str = "mixed") -> optax.GradientTransformationExtraArgs:
  """OGM-GE's generalisation enhancement (Peng et al., CVPR 2022) as a transform.

  ``update(grads, state, params=None, *, active=True)`` adds ``N(0, std(g) + 1e-8)`` to each
  encoder kernel ``g`` (parameters under ``encoders_<i>`` with ndim >= 2: the released code
  does it for the 4-D conv kernels; MLP encoders have 2-D ones), only while ``active``. The
  key lives in the state (checkpointed), so every data-parallel replica draws the same noise.
  ``scope``: which leaves get noise (``partition.SCOPES``; module docstring).
  """
  check_scope(scope)

  def init_fn(params):
    del params
    return GENoiseState(jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, active=True, **extra_args):
    del params
    check_extra_args(extra_args, "ge_noise")
    key, sub = jax.random.split(state.noise_key)
    return add_ge_noise(updates, sub, enabled=active, scope=scope), GENoiseState(key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
