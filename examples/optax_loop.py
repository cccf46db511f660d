"""AGM in a plain JAX + optax training loop, on a tiny two-modality problem.

The pattern (docs/COMPOSING.md): ``shapley.per_modality_grads`` gives each modality's share of
the gradient (leading axis k) and the batch's mono-modal cross-entropies; ``modulation.agm``
goes first in the optax chain and needs ``mono_ce=`` in ``tx.update``; the rest of the chain
is ordinary optax.

    python examples/optax_loop.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import modulation, shapley

MODS = ("audio", "visual")


def make_data(n=128, seed=0):
  """Two modalities; the label depends on both, audio more strongly."""
  rng = np.random.default_rng(seed)
  audio = rng.normal(size=(n, 4)).astype(np.float32)
  visual = rng.normal(size=(n, 3)).astype(np.float32)
  labels = (2.0 * audio[:, 0] + visual[:, 0] + visual[:, 1] > 0).astype(np.int32)
  return {"audio": audio, "visual": visual}, labels


def init_params(seed=0, hidden=8, classes=2):
  rng = np.random.default_rng(seed)
  normal = lambda *shape, scale: jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)
  return {"encoders_0": {"w": normal(4, hidden, scale=0.5)},
          "encoders_1": {"w": normal(3, hidden, scale=0.5)},
          "head": {"w": normal(2 * hidden, classes, scale=0.1), "b": jnp.zeros(classes)}}


def logits_fn(params, inputs):
  """Late fusion of two tanh encoders. An absent modality arrives as zeros."""
  z = jnp.concatenate([jnp.tanh(inputs["audio"] @ params["encoders_0"]["w"]),
                       jnp.tanh(inputs["visual"] @ params["encoders_1"]["w"])], -1)
  return z @ params["head"]["w"] + params["head"]["b"]


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
  for t in range(steps):
    i = (t * batch_size) % len(labels)
    x = {m: v[i:i + batch_size] for m, v in inputs.items()}
    params, opt_state, loss = step(params, opt_state, x, labels[i:i + batch_size])
    losses.append(float(loss))
  kappa = np.asarray(optax.tree_utils.tree_get(opt_state, "kappa"))
  return {"losses": losses, "kappa": kappa, "params": params}


if __name__ == "__main__":
  out = main()
  print(f"loss {out['losses'][0]:.3f} -> {out['losses'][-1]:.3f}, last kappa {out['kappa']}")
