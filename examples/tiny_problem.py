"""The tiny two-modality problem every example trains on: the data, a plain-JAX late-fusion
model, and a NumPy initialiser. Shared so each example shows only its framework's loop."""

import jax
import jax.numpy as jnp
import numpy as np

MODS = ("audio", "visual")


def make_data(n=128, seed=0):
  """Two modalities; the label depends on both, audio more strongly."""
  rng = np.random.default_rng(seed)
  audio = rng.normal(size=(n, 4)).astype(np.float32)
  visual = rng.normal(size=(n, 3)).astype(np.float32)
  labels = (2.0 * audio[:, 0] + visual[:, 0] + visual[:, 1] > 0).astype(np.int32)
  return {"audio": audio, "visual": visual}, labels


def numpy_init(abstract, seed=0, scale=0.3):
  """Random arrays in the shapes of ``abstract`` (ShapeDtypeStructs), drawn with NumPy: the
  jax.random initialisers take seconds to compile on a CPU, and this example runs in the test
  suite. The framework's own initialiser works the same."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype),
                      abstract)


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


def batches(inputs, labels, steps, batch_size):
  """``steps`` mini-batches ``(x, y)`` taken in order, wrapping around the data."""
  for t in range(steps):
    i = (t * batch_size) % len(labels)
    yield {m: v[i:i + batch_size] for m, v in inputs.items()}, labels[i:i + batch_size]
