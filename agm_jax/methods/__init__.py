"""Training methods, one file each; ``get(name)`` returns its :class:`Method`."""

from agm_jax.methods import (agm, agm_1, agm_ge, gblending, greedy, joint, mses, mslr, ogm,
                             ogm_ge, ogm_ge_ra, opm, unimodal)
from agm_jax.methods.base import Context, EvalOutput, Method, StepOutput

REGISTRY = {m.METHOD.name: m.METHOD for m in (joint, agm, unimodal, agm_1, agm_ge, ogm_ge,
                                               ogm_ge_ra, ogm, opm, mslr, mses, gblending,
                                               greedy)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Method:
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(NAMES)}")
  return REGISTRY[name]


__all__ = ["Context", "EvalOutput", "Method", "NAMES", "REGISTRY", "StepOutput", "get"]
