"""PyTorch's rule for parameters without a gradient, as an optax wrapper: :func:`skip_untrained`.

A PyTorch optimiser step skips every parameter whose ``.grad`` is ``None`` (what
``optimizer.zero_grad()`` leaves since PyTorch 2.0, ``set_to_none=True``): its value, its
momentum buffer and its weight decay stay as they were. An optax step has no "no gradient":
a parameter outside the loss gets a zero gradient, and momentum and weight decay still move
it. Methods that train part of the model per optimiser step (MLA's one modality per step)
reproduce the authors' PyTorch runs with this wrapper around the run's optimiser.

``update(updates, state, params=None, *, trained=None, advance=None, **extra_args)``:

* ``trained``: ``(k,)`` booleans, one per modality (may be traced). The leaves of modality i
  (``transforms.partition``: under ``encoders_<i>``) get a zero update where ``trained[i]`` is
  False, and every parameter-shaped part of ``inner``'s state (momentum, Adam's moments) keeps
  its old value there. Shared leaves (the fusion head) are always trained.
* ``advance``: whether the rest of ``inner``'s state (its step counts: the learning-rate
  schedule's, Adam's bias correction) moves on. False keeps it, so several optimiser steps on
  one batch can count as one step of the schedule (PyTorch's schedulers step per epoch or per
  batch, not per ``optimizer.step()``).

Without either keyword the wrapper is ``inner``. A part of the state is parameter-shaped when
its tree structure is the parameter tree's (so the parameters must be a tree, not one array).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from agm_jax.transforms import partition


def skip_untrained(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner`` with the ``trained`` / ``advance`` keywords of the module docstring."""
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, *, trained=None, advance=None, **extra_args):
    new_updates, new_state = inner.update(updates, state, params, **extra_args)
    if trained is None and advance is None:
      return new_updates, new_state
    structure = jax.tree.structure(updates)
    if structure.num_nodes == 1:
      raise ValueError("skip_untrained needs the parameters as a tree (a dict), not one array")
    keep = jnp.asarray(True if advance is None else advance, bool)

    def select(new, old):
      if trained is None:
        return new
      return partition.select_by_modality(trained, new, old, shared="new")

    new_updates = select(new_updates, jax.tree.map(jnp.zeros_like, new_updates))

    def is_params(x):
      return jax.tree.structure(x) == structure

    def select_state(new, old):
      if is_params(new):
        return select(new, old)
      return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)

    return new_updates, jax.tree.map(select_state, new_state, state, is_leaf=is_params)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)
