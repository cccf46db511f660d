"""optax's wrappers with AGM, on a tiny two-modality problem: a scheduled alpha
(``optax.inject_hyperparams``), a finiteness guard (``optax.apply_if_finite``), gradient
accumulation (``optax.MultiSteps``) and per-group base optimisers (``optax.multi_transform``),
all in one optimiser.

The rule (docs/COMPOSING.md): the modulation goes FIRST in the chain and sees every
mini-batch (kappa from that mini-batch's ``mono_ce``, its running mean advanced once per
mini-batch); wrappers wrap the base optimiser AFTER it. Each on its own::

    optax.chain(agm(...), optax.MultiSteps(optax.sgd(...), every_k_schedule=2))
    optax.chain(agm(...), optax.apply_if_finite(optax.sgd(...), max_consecutive_errors=3))
    optax.chain(agm(...), optax.multi_transform({"encoders": adam, "head": sgd}, labels))

``optax.MultiSteps(optax.chain(agm, ...))`` or ``optax.apply_if_finite(optax.chain(agm, ...))``
raise a ValueError saying so.

    python examples/optax_wrappers.py
"""

import jax
import numpy as np
import optax
from tiny_problem import MODS, batches, init_params, logits_fn, make_data

from agm_jax import modulation, shapley
from agm_jax.transforms import partition


def encoder_or_head(params):
  """``"encoders"`` for parameters under ``encoders_<m>`` (``transforms.partition``), else
  ``"head"``: the labels of ``optax.multi_transform``."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "head" if partition.modality_index(path) == partition.SHARED
      else "encoders", params)


def make_optimizer(steps):
  # alpha warmed up from 0 (joint training) to 0.5; num_modalities sets shapes: static.
  agm = optax.inject_hyperparams(modulation.agm, static_args="num_modalities")(
      alpha=optax.linear_schedule(0.0, 0.5, steps), num_modalities=2)
  # Adam for the encoders, SGD with momentum for the fusion head.
  base = optax.multi_transform({"encoders": optax.adam(1e-2),
                                "head": optax.sgd(0.1, momentum=0.9)}, encoder_or_head)
  # Skip a non-finite mini-batch (before it is accumulated); step every 2 mini-batches.
  return optax.chain(agm, optax.apply_if_finite(optax.MultiSteps(base, every_k_schedule=2),
                                                max_consecutive_errors=3))


def main(steps=24, batch_size=32, nan_at=5):
  """Trains with one NaN mini-batch (its audio input) at step ``nan_at``."""
  inputs, labels = make_data()
  params = init_params()
  tx = make_optimizer(steps)
  opt_state = tx.init(params)
  grads_fn = jax.jit(lambda p, x, y: shapley.per_modality_grads(logits_fn, p, x, y, MODS))

  @jax.jit
  def apply(grads, opt_state, params, mono_ce):
    updates, opt_state = tx.update(grads, opt_state, params, mono_ce=mono_ce)
    return optax.apply_updates(params, updates), opt_state

  losses = []
  for t, (x, y) in enumerate(batches(inputs, labels, steps, batch_size)):
    if t == nan_at:
      x["audio"] = np.full_like(x["audio"], np.nan)
    grads, aux = grads_fn(params, x, y)
    params, opt_state = apply(grads, opt_state, params, aux["mono_ce"])
    losses.append(aux["loss"])
  losses = [float(v) for v in losses]   # one host transfer after the loop, not one per step
  agm_state, guard_state = opt_state
  return {"losses": losses, "params": params,
          "alpha": float(agm_state.hyperparams["alpha"]),
          "kappa": np.asarray(agm_state.inner_state.kappa),
          "skipped": int(guard_state.total_notfinite),
          "gradient_steps": int(guard_state.inner_state.gradient_step)}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}",
        {k: v for k, v in out.items() if k not in ("losses", "params")})
