"""Training methods, one file each; ``get(name)`` returns its :class:`Method`.

Methods import the core (``shapley``, ``subsets``, ``transforms``) and ``models``, never the
trainer. :func:`hparams` and :func:`make_tx` are the two calls the trainer makes outside jit
to turn a method's config section into typed hyper-parameters and its optimiser; their
``ValueError`` messages name the config key (``agm.alpha must be >= 0, got -1.0``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax

from agm_jax.methods import (
  agm,
  agm_1,
  agm_ge,
  amco,
  cml,
  feature_dropout,
  gblending,
  greedy,
  greedy_util,
  inforeg,
  joint,
  lfm,
  mbsd,
  mla,
  mmcosine,
  mmpareto,
  moddrop,
  mses,
  mslr,
  ogm,
  ogm_ge,
  ogm_ge_ra,
  opm,
  opm_ogm,
  pmr,
  reconboost,
  relearning,
  sample,
  umt,
  unimodal,
)
from agm_jax.methods.base import Context, EvalOutput, Method, StepOutput, Window, from_section

REGISTRY = {m.METHOD.name: m.METHOD for m in (joint, agm, unimodal, agm_1, agm_ge, ogm_ge,
                                               ogm_ge_ra, ogm, opm, opm_ogm, mslr, mses,
                                               gblending, greedy, greedy_util, moddrop,
                                               feature_dropout, pmr, mmcosine, cml, amco, mmpareto,
                                               lfm, mbsd, inforeg,
                                               umt, reconboost, mla, relearning, sample)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Method:
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(NAMES)}")
  return REGISTRY[name]


def _named(section_name: str, section: Mapping[str, Any], fn: Callable, *args):
  """``fn(*args)``, with a ValueError that starts with one of the section's keys prefixed by
  the section's name (``alpha must be …`` -> ``agm.alpha must be …``)."""
  try:
    return fn(*args)
  except ValueError as e:
    message = str(e)
    first = message.split(" ", 1)[0]
    keys = set(section or {}) | {"start_epoch", "end_epoch"}
    if first in keys:
      raise ValueError(f"{section_name}.{message}") from None
    raise


def hparams(method: Method, config) -> Any:
  """The method's typed hyper-parameters from ``config[method.name]`` (validated)."""
  if method.name not in config:
    raise ValueError(f"the config has no {method.name!r} section (method {method.name!r} "
                     "reads its settings from it)")
  section = config[method.name]
  return _named(method.name, section, method.hparams, section)


def make_tx(method: Method, ctx: Context, base: optax.GradientTransformation, config):
  """``method.make_tx(ctx, base)``; argument errors name the config key."""
  return _named(method.name, config[method.name], method.make_tx, ctx, base)


def window(hp) -> Window | None:
  """The modulation window among a method's hyper-parameters (None: the method has none)."""
  if not dataclasses.is_dataclass(hp):
    return None
  found = [getattr(hp, f.name) for f in dataclasses.fields(hp)
           if isinstance(getattr(hp, f.name), Window)]
  return found[0] if found else None


__all__ = ["Context", "EvalOutput", "Method", "NAMES", "REGISTRY", "StepOutput", "Window",
           "from_section", "get", "hparams", "make_tx", "window"]
