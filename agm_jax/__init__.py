"""agm-jax: Adaptive Gradient Modulation and balanced multimodal learning in JAX.

Layers (docs/ARCHITECTURE.md), imports running one way:
core (``shapley``, ``subsets``, ``transforms``, ``probe``, ``modalities``; ``modulation``
re-exports AGM; ``compat``: flax's TrainState with the transforms) ← ``models`` ← ``methods``
← ``train`` ← ``tools`` and ``launch.py``.
Submodules load on first use (``agm_jax.modulation``), so tools such as
``python -m agm_jax.tools.report`` start without importing JAX.
"""

import importlib

__all__ = ["compat", "modalities", "modulation", "probe", "shapley", "subsets", "transforms"]
__version__ = "0.1.0"


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f"agm_jax.{name}")
  raise AttributeError(f"module 'agm_jax' has no attribute {name!r}")
