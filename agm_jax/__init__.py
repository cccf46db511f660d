"""agm-jax: Adaptive Gradient Modulation and balanced multimodal learning in JAX.

The library modules (``shapley``, ``modulation``, ``probe``) import only jax/optax;
the trainer (``agm_jax.train``) and the data pipelines are separate layers.
"""

from agm_jax import modulation, probe, shapley

__all__ = ["modulation", "probe", "shapley"]
__version__ = "0.1.0"
