"""AGM with an Equinox model, on a tiny two-modality problem.

``eqx.partition`` splits the model into its arrays and the rest; ``shapley.per_modality_grads``
differentiates a pure function of the arrays (``eqx.combine`` inside); the stacked gradients
(an Equinox module whose leaves carry a leading axis k) go to ``modulation.agm`` first in the
optax chain (docs/COMPOSING.md).

    python examples/equinox_loop.py
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tiny_problem import MODS, batches, make_data, numpy_init

from agm_jax import modulation, shapley


class LateFusion(eqx.Module):
  """One tanh encoder per modality (``encoders_<m>``) and a linear head."""
  encoders_0: eqx.nn.Linear
  encoders_1: eqx.nn.Linear
  head: eqx.nn.Linear

  def __init__(self, key, hidden=8, classes=2):
    ka, kv, kh = jax.random.split(key, 3)
    self.encoders_0 = eqx.nn.Linear(4, hidden, key=ka)
    self.encoders_1 = eqx.nn.Linear(3, hidden, key=kv)
    self.head = eqx.nn.Linear(2 * hidden, classes, key=kh)

  def __call__(self, inputs):
    z = jnp.concatenate([jnp.tanh(jax.vmap(self.encoders_0)(inputs["audio"])),
                         jnp.tanh(jax.vmap(self.encoders_1)(inputs["visual"]))], -1)
    return jax.vmap(self.head)(z)


def main(steps=30, batch_size=32):
  inputs, labels = make_data()
  model = numpy_init(eqx.filter_eval_shape(LateFusion, jax.random.key(0)))
  params, static = eqx.partition(model, eqx.is_inexact_array)
  tx = optax.chain(modulation.agm(alpha=0.5, num_modalities=2), optax.sgd(0.1, momentum=0.9))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    logits_fn = lambda p, d: eqx.combine(p, static)(d)
    grads, aux = shapley.per_modality_grads(logits_fn, params, x, y, MODS)
    updates, opt_state = tx.update(grads, opt_state, params, mono_ce=aux["mono_ce"])
    return eqx.apply_updates(params, updates), opt_state, aux["loss"]

  losses = []
  for x, y in batches(inputs, labels, steps, batch_size):
    params, opt_state, loss = step(params, opt_state, x, y)
    losses.append(loss)
  losses = [float(v) for v in losses]   # one host transfer after the loop, not one per step
  kappa = np.asarray(optax.tree_utils.tree_get(opt_state, "kappa"))
  return {"losses": losses, "kappa": kappa, "model": eqx.combine(params, static)}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}, last kappa {out['kappa']}")
