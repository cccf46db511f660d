"""Per-example drop masks under ``pmap``: every device holds the same replicated step key, so
the methods that drop per example (OPM, ModDrop, the feature-dropout baselines) fold in the
device index (``subsets.device_key``); OPM's per-batch ``execute`` draw stays shared. A named
``vmap`` stands in for the devices (``lax.axis_index`` means the same under both)."""

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import subsets
from agm_jax.methods import feature_dropout, moddrop, opm

D, B = 4, 32
FEATS = (jnp.ones((B, 8)), jnp.ones((B, 8)))
Q = jnp.array([0.5, 0.5])


def _hp(schedule):
  return feature_dropout.HParams(schedule, 0.5, 100, 1e-3)


DRAWS = {
    "opm": lambda k, a: opm.keep_mask(Q, k, 2, B, p_exe=1.0, axis_name=a)[0],
    "moddrop": lambda k, a: moddrop.keep_patterns(0.5, k, 2, B, a),
    "constant": lambda k, a: feature_dropout.drop_features(FEATS, _hp("constant"), 0, k, a)[0],
    "evolutional": lambda k, a: feature_dropout.drop_features(FEATS, _hp("evolutional"), 0, k,
                                                              a)[0],
}


def _distinct(x):
  """How many different per-device results."""
  return len({np.asarray(r).tobytes() for r in x})


def _on_devices(fn, keys):
  return jax.vmap(fn, axis_name="d")(keys)


def test_per_example_masks_differ_across_devices():
  keys = jnp.stack([jax.random.PRNGKey(0)] * D)   # replicated, as the train step's
  for name, draw in DRAWS.items():
    assert _distinct(_on_devices(lambda k, draw=draw: draw(k, "d"), keys)) == D, name
    assert _distinct(_on_devices(lambda k, draw=draw: draw(k, None), keys)) == 1, name
  execute = [_on_devices(lambda k: opm.keep_mask(Q, k, 2, B, p_exe=0.5, axis_name="d")[1],
                         jnp.stack([jax.random.PRNGKey(s)] * D)) for s in range(8)]
  assert all(_distinct(e) == 1 for e in execute)           # OPM's per-batch draw: shared
  assert len({bool(e[0]) for e in execute}) == 2           # and still random (p_exe 0.5)


def test_one_device_keys_are_unchanged():
  key = jax.random.PRNGKey(3)
  assert subsets.device_key(key) is key
  q = jnp.array([0.3, 0.6])
  keep, _ = opm.keep_mask(q, key, 2, 16, p_exe=1.0)
  want = jax.random.bernoulli(jax.random.split(key)[1], (1.0 - q)[:, None], (2, 16))
  np.testing.assert_array_equal(keep, want)
