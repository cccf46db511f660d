"""A method's own state in the optimiser state: :func:`with_carry`.

Some methods carry quantities from one step to the next that are not gradient statistics
(PMR's class prototypes, AMCo's dependence flags). Kept in the optimiser state they are
checkpointed with it, restored exactly on resume, vmapped per seed and replicated under data
parallelism like every other transform's state. The step computes the new value and hands it
to ``tx.update`` as the keyword ``carry=``; the epoch-end hook of the method edits it with
:func:`replace_carry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from agm_jax.transforms.common import require_extra_arg


class CarryState(NamedTuple):
  inner: optax.OptState
  carry: Any            # the method's state: any pytree of arrays (a NamedTuple)


def with_carry(inner: optax.GradientTransformation, init: Callable[[Any], Any], *,
               name: str) -> optax.GradientTransformationExtraArgs:
  """``inner`` with the method state ``init(params)`` beside its own.

  ``update(updates, state, params=None, *, carry, **extra_args)`` stores ``carry`` (the
  step's new method state, same structure; no gradient flows into it) and hands the rest to
  ``inner``. ``name`` (the method) appears in the error when ``carry`` did not arrive."""
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return CarryState(inner.init(params), init(params))

  def update_fn(updates, state, params=None, *, carry=None, **extra_args):
    require_extra_arg(carry, "carry", f"with_carry({name})", f"{name}'s new state")
    if jax.tree.structure(carry) != jax.tree.structure(state.carry):
      raise ValueError(f"{name}'s carry changed structure: {jax.tree.structure(state.carry)} "
                       f"-> {jax.tree.structure(carry)}")
    carry = jax.tree.map(lambda new, old: jax.lax.stop_gradient(new).astype(old.dtype),
                         carry, state.carry)
    updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
    return updates, CarryState(inner_state, carry)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def get_carry(opt_state: Any, cls: type) -> Any:
  """The one carried ``cls`` instance inside a (chained) optimiser state."""
  found = [s.carry for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, CarryState))
           if isinstance(s, CarryState) and isinstance(s.carry, cls)]
  if len(found) != 1:
    raise ValueError(f"expected one carried {cls.__name__} in the optimiser state, "
                     f"found {len(found)}")
  return found[0]


def replace_carry(opt_state: Any, cls: type, fn: Callable[[Any], Any]) -> Any:
  """``opt_state`` with the carried ``cls`` instance ``c`` replaced by ``fn(c)``."""
  def one(s):
    if isinstance(s, CarryState) and isinstance(s.carry, cls):
      return s._replace(carry=fn(s.carry))
    return s
  return jax.tree.map(one, opt_state, is_leaf=lambda s: isinstance(s, CarryState))
