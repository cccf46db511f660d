"""agm-jax: Adaptive Gradient Modulation and balanced multimodal learning in JAX.

The library modules (``shapley``, ``modulation``, ``probe``) import only jax/optax; the trainer
(``agm_jax.train``), the models and the data pipelines are separate layers. Submodules load
on first use (``agm_jax.modulation``), so tools such as ``python -m agm_jax.report`` start
without importing JAX.
"""

import importlib

__all__ = ["modulation", "probe", "shapley"]
__version__ = "0.1.0"


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f"agm_jax.{name}")
  raise AttributeError(f"module 'agm_jax' has no attribute {name!r}")
