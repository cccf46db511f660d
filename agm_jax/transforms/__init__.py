"""The optax gradient transformations of agm-jax (core: pure JAX, no trainer, no config).

One module per family, each with its formulas, paper and state:

* ``agm``: AGM (ICCV 2023) — :func:`agm`, :func:`agm_coefficients` (κ lives there);
* ``ge``: OGM-GE's generalisation enhancement — :func:`ge_noise`, :func:`add_ge_noise`;
* ``score_ratio``: OGM-GE, OGM-GE-RA, OGM and OPM — :func:`ogm_ge`, :func:`ogm`, :func:`opm`;
* ``epoch``: coefficients updated at epoch end — :func:`mslr`, :func:`mses`, :func:`blend`;
* ``clip``: the released AGM code's conditional global-norm clip — :func:`clip_by_global_norm_if`;
* ``greedy``: Greedy's re-balancing schedule — :func:`greedy_schedule`;
* ``dropout_schedules``: the T-PAMI Table 6 baselines' dropout rates and masks;
* ``partition``: which parameters are modality m's (``encoders_<m>``);
* ``carry``: a method's own state in the optimiser state — :func:`~carry.with_carry`;
* ``pareto``: MMPareto's direction of two losses' gradients — :func:`~pareto.mmpareto`;
* ``inforeg``: InfoReg's pull toward the epoch-start parameters — :func:`~inforeg.inforeg`;
* ``untrained``: PyTorch's rule for parameters without a gradient (skipped by the step) —
  :func:`skip_untrained`;
* ``common``: the shared batch statistic, running mean, combination and keyword check.

``agm_jax.modulation`` re-exports the AGM and GE names (the README's entry point).

Every factory works under ``optax.inject_hyperparams`` (shape-setting arguments such as
``num_modalities`` in ``static_args``; only concrete values are validated), ``jit``, ``vmap``
and, with ``axis_name``, ``pmap``/``shard_map``. The modulation goes first in an optax chain
and wrappers wrap the base optimiser after it: docs/COMPOSING.md.
"""

from agm_jax.transforms.agm import AGMState, agm, agm_coefficients
from agm_jax.transforms.clip import ConditionalClipState, clip_by_global_norm_if
from agm_jax.transforms.common import EXTRA_ARGS, combine, running_mean
from agm_jax.transforms.epoch import (
                                      BlendState,
                                      MSESState,
                                      MSLRState,
                                      blend,
                                      blend_epoch_update,
                                      mses,
                                      mses_epoch_update,
                                      mslr,
                                      mslr_epoch_update,
)
from agm_jax.transforms.ge import GENoiseState, add_ge_noise, ge_noise
from agm_jax.transforms.greedy import GreedyState, greedy_schedule, utilisation_rates
from agm_jax.transforms.score_ratio import OGMState, OPMState, ogm, ogm_ge, ogm_scores, opm
from agm_jax.transforms.untrained import skip_untrained

__all__ = ["AGMState", "BlendState", "ConditionalClipState", "EXTRA_ARGS",
           "clip_by_global_norm_if", "GENoiseState", "GreedyState", "MSESState",
           "MSLRState", "OGMState", "OPMState", "add_ge_noise", "agm", "agm_coefficients",
           "blend", "blend_epoch_update", "combine", "ge_noise", "greedy_schedule", "mses",
           "mses_epoch_update", "mslr", "mslr_epoch_update", "ogm", "ogm_ge", "ogm_scores",
           "opm", "running_mean", "skip_untrained", "utilisation_rates"]
