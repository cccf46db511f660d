"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023).

Each step: all 2**k masked subsets forward, the mono-modal cross-entropies ``ce^m`` of the
Shapley responses, ``kappa = agm_coefficients(ce, running mean)`` inside the ``agm`` optax
transform, and ONE backward pass with cotangent ``(C.T @ kappa)[s] * dL/dphi`` on subset s —
``g = sum_m kappa^m VJP(phi^m, dL/dphi)`` (eq. 6). Gradients flow through every masked pass
(unlike BalanceBenchmark's reading, which stops them: then ``g^m`` would not be modality m's
share of the gradient). Config: ``agm.alpha``, ``agm.clip``, ``agm.start_epoch``,
``agm.end_epoch`` (outside the window kappa = 1), ``agm.subset_bn``, ``agm.pad``,
``agm.reference``.
"""

import optax

from agm_jax import modulation
from agm_jax.methods.base import Method, StepOutput, mono_metrics, shapley_step
from agm_jax.train import parallel


def make_tx(config, base, k, *, reference=None):
  return optax.chain(
      modulation.agm(config.agm.alpha, config.agm.clip, num_modalities=k,
                     reference=reference or config.agm.reference,
                     axis_name=parallel.axis_name(config)), base)


def gradients(ctx, params, batch_stats, batch, rng, active):
  fwd, backward = shapley_step(ctx, params, batch_stats, batch, rng, grad_masked=True)
  return StepOutput(backward, {"mono_ce": fwd.mono_ce, "active": active},
                    fwd.aux.batch_stats, mono_metrics(fwd, batch["label"], ctx.modalities))


METHOD = Method(name="agm", gradients=gradients, make_tx=make_tx, logged_state=("kappa",))
