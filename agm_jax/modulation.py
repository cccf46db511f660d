"""AGM as an optax transformation: the README's entry point, re-exported from
``agm_jax.transforms`` (the formulas live in ``transforms/agm.py`` and ``transforms/ge.py``)::

    tx = optax.chain(modulation.agm(alpha=1.0, num_modalities=2), optax.sgd(1e-3))
    updates, opt_state = tx.update(per_modality_grads, opt_state, params, mono_ce=ce)
"""

from agm_jax.transforms.agm import REFERENCES, AGMState, agm, agm_coefficients
from agm_jax.transforms.common import batch_statistic, combine, running_mean
from agm_jax.transforms.ge import GENoiseState, add_ge_noise, ge_noise

__all__ = ["REFERENCES", "AGMState", "GENoiseState", "add_ge_noise", "agm", "agm_coefficients",
           "batch_statistic", "combine", "ge_noise", "running_mean"]
