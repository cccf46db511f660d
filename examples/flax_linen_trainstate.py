"""AGM with a Flax linen model and a ``TrainState``, on a tiny two-modality problem.

flax's ``TrainState.apply_gradients(grads=…, **kwargs)`` treats every keyword as a field to
replace, so ``mono_ce`` would never reach ``agm`` (which then raises a TypeError naming the
fix). ``agm_jax.compat.ModulatedTrainState`` forwards keywords that are not fields of the
state to ``tx.update`` (docs/COMPOSING.md).

    python examples/flax_linen_trainstate.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tiny_problem import MODS, batches, make_data, numpy_init

from agm_jax import compat, modulation, shapley


class LateFusion(nn.Module):
  """One tanh encoder per modality (``encoders_<m>``, as ``transforms.partition`` expects)
  and a linear head on the concatenated features."""
  hidden: int = 8
  classes: int = 2

  @nn.compact
  def __call__(self, inputs):
    z = [jnp.tanh(nn.Dense(self.hidden, name=f"encoders_{i}")(inputs[m]))
         for i, m in enumerate(MODS)]
    return nn.Dense(self.classes, name="head")(jnp.concatenate(z, -1))


def main(steps=30, batch_size=32):
  inputs, labels = make_data()
  model = LateFusion()
  sample = {m: v[:1] for m, v in inputs.items()}
  params = numpy_init(jax.eval_shape(model.init, jax.random.key(0), sample)["params"])
  tx = optax.chain(modulation.agm(alpha=0.5, num_modalities=2), optax.sgd(0.1, momentum=0.9))
  state = compat.ModulatedTrainState.create(apply_fn=model.apply, params=params, tx=tx)

  @jax.jit
  def step(state, x, y):
    logits_fn = lambda p, d: state.apply_fn({"params": p}, d)
    grads, aux = shapley.per_modality_grads(logits_fn, state.params, x, y, MODS)
    return state.apply_gradients(grads=grads, mono_ce=aux["mono_ce"]), aux["loss"]

  losses = []
  for x, y in batches(inputs, labels, steps, batch_size):
    state, loss = step(state, x, y)
    losses.append(loss)
  losses = [float(v) for v in losses]   # one host transfer after the loop, not one per step
  kappa = np.asarray(optax.tree_utils.tree_get(state.opt_state, "kappa"))
  return {"losses": losses, "kappa": kappa, "step": int(state.step)}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}, last kappa {out['kappa']}")
