"""Per-example drop masks under ``pmap``: every device holds the same replicated step key, so
the methods that drop per example (OPM, ModDrop, the feature-dropout baselines) fold in the
device index (``subsets.device_key``); OPM's per-batch ``execute`` draw stays shared. The
4-device draws run in a subprocess (the device count is fixed when jax starts)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import subsets
from agm_jax.methods import opm
from tests.conftest import ROOT, device_env

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from agm_jax.methods import feature_dropout, moddrop, opm

D, B = jax.device_count(), 32
assert D == 4, D
hp = lambda schedule: feature_dropout.HParams(schedule, 0.5, 100, 1e-3)
feats = (jnp.ones((B, 8)), jnp.ones((B, 8)))
q = jnp.array([0.5, 0.5])
draws = {
    "opm": lambda k, a: opm.keep_mask(q, k, 2, B, p_exe=1.0, axis_name=a)[0],
    "moddrop": lambda k, a: moddrop.keep_patterns(0.5, k, 2, B, a),
    "constant": lambda k, a: feature_dropout.drop_features(feats, hp("constant"), 0, k, a)[0],
    "evolutional": lambda k, a: feature_dropout.drop_features(feats, hp("evolutional"), 0, k,
                                                              a)[0],
}

def distinct(x):   # how many different per-device masks
  return len({np.asarray(r).tobytes() for r in x})

keys = jnp.stack([jax.random.PRNGKey(0)] * D)   # replicated, as the train step's
out = {}
for name, draw in draws.items():
  folded = jax.pmap(lambda k: draw(k, "d"), axis_name="d")(keys)
  shared = jax.pmap(lambda k: draw(k, None), axis_name="d")(keys)
  out[name] = [distinct(folded), distinct(shared)]
execute = [np.asarray(jax.pmap(lambda k: opm.keep_mask(q, k, 2, B, p_exe=0.5, axis_name="d")[1],
                               axis_name="d")(jnp.stack([jax.random.PRNGKey(s)] * D)))
           for s in range(8)]
out["execute"] = [[bool(e[0]), distinct(e)] for e in execute]
print("RESULT", json.dumps(out))
"""


def test_per_example_masks_differ_across_pmap_devices():
  res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       cwd=ROOT, env=device_env(4), timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.split("RESULT", 1)[1])
  for name in ("opm", "moddrop", "constant", "evolutional"):
    assert out[name] == [4, 1], (name, out[name])   # 4 devices, 4 masks; unfolded: 1
  execute = out.pop("execute")
  assert all(n == 1 for _, n in execute)             # OPM's per-batch draw: shared
  assert len({e for e, _ in execute}) == 2           # and still random (p_exe 0.5)


def test_one_device_keys_are_unchanged():
  key = jax.random.PRNGKey(3)
  assert subsets.device_key(key) is key
  q = jnp.array([0.3, 0.6])
  keep, _ = opm.keep_mask(q, key, 2, 16, p_exe=1.0)
  want = jax.random.bernoulli(jax.random.split(key)[1], (1.0 - q)[:, None], (2, 16))
  np.testing.assert_array_equal(keep, want)
