"""AGM with a Flax NNX model and ``nnx.Optimizer``, on a tiny two-modality problem.

``nnx.split`` separates the parameters, ``shapley.per_modality_grads`` differentiates a pure
function of them (``nnx.merge`` inside), and ``nnx.Optimizer.update(model, grads, **kwargs)``
forwards ``mono_ce=`` to ``tx.update`` (docs/COMPOSING.md).

    python examples/flax_nnx.py
"""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tiny_problem import MODS, batches, make_data, numpy_init

from agm_jax import modulation, shapley


class LateFusion(nnx.Module):
  """One tanh encoder per modality (``encoders_<m>``) and a linear head."""

  def __init__(self, rngs, hidden=8, classes=2):
    self.encoders_0 = nnx.Linear(4, hidden, rngs=rngs)
    self.encoders_1 = nnx.Linear(3, hidden, rngs=rngs)
    self.head = nnx.Linear(2 * hidden, classes, rngs=rngs)

  def __call__(self, inputs):
    z = jnp.concatenate([jnp.tanh(self.encoders_0(inputs["audio"])),
                         jnp.tanh(self.encoders_1(inputs["visual"]))], -1)
    return self.head(z)


@nnx.jit
def train_step(model, optimizer, x, y):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  logits_fn = lambda p, d: nnx.merge(graphdef, p, rest)(d)
  grads, aux = shapley.per_modality_grads(logits_fn, params, x, y, MODS)
  optimizer.update(model, grads, mono_ce=aux["mono_ce"])
  return aux["loss"]


def main(steps=30, batch_size=32):
  inputs, labels = make_data()
  graphdef, state = nnx.split(nnx.eval_shape(lambda: LateFusion(nnx.Rngs(0))))
  model = nnx.merge(graphdef, numpy_init(state))
  tx = optax.chain(modulation.agm(alpha=0.5, num_modalities=2), optax.sgd(0.1, momentum=0.9))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  losses = []
  for x, y in batches(inputs, labels, steps, batch_size):
    losses.append(train_step(model, optimizer, x, y))
  losses = [float(v) for v in losses]   # one host transfer after the loop, not one per step
  kappa = np.asarray(optax.tree_utils.tree_get(nnx.as_pure(optimizer.opt_state), "kappa"))
  return {"losses": losses, "kappa": kappa, "step": int(optimizer.step[...])}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}, last kappa {out['kappa']}")
