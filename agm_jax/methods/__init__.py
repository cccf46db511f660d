"""Training methods, one file each; ``get(name)`` returns its :class:`Method`."""

from agm_jax.methods import agm, joint, unimodal
from agm_jax.methods.base import Context, EvalOutput, Method, StepOutput

REGISTRY = {m.METHOD.name: m.METHOD for m in (joint, agm, unimodal)}
NAMES = tuple(REGISTRY)


def get(name: str) -> Method:
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(NAMES)}")
  return REGISTRY[name]


__all__ = ["Context", "EvalOutput", "Method", "NAMES", "REGISTRY", "StepOutput", "get"]
