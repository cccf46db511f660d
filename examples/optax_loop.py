"""AGM in a plain JAX + optax training loop, on a tiny two-modality problem.

The pattern (docs/COMPOSING.md): ``shapley.per_modality_grads`` gives each modality's share of
the gradient (leading axis k) and the batch's mono-modal cross-entropies; ``modulation.agm``
goes first in the optax chain and needs ``mono_ce=`` in ``tx.update``; the rest of the chain
is ordinary optax.

    python examples/optax_loop.py
"""

import jax
import numpy as np
import optax
from tiny_problem import MODS, batches, init_params, logits_fn, make_data

from agm_jax import modulation, shapley


def main(steps=30, batch_size=32):
  inputs, labels = make_data()
  params = init_params()
  tx = optax.chain(modulation.agm(alpha=0.5, clip=10.0, num_modalities=2),
                   optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    grads, aux = shapley.per_modality_grads(logits_fn, params, x, y, MODS)
    updates, opt_state = tx.update(grads, opt_state, params, mono_ce=aux["mono_ce"])
    return optax.apply_updates(params, updates), opt_state, aux["loss"]

  losses = []
  for x, y in batches(inputs, labels, steps, batch_size):
    params, opt_state, loss = step(params, opt_state, x, y)
    losses.append(loss)
  losses = [float(v) for v in losses]   # one host transfer after the loop, not one per step
  kappa = np.asarray(optax.tree_utils.tree_get(opt_state, "kappa"))
  return {"losses": losses, "kappa": kappa, "params": params}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}, last kappa {out['kappa']}")
