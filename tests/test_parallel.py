"""Data parallelism: 1 device vs 4 (forced host devices) with sharding and pmap, and the
exported pmap step in a foreign loop. The 4-device runs happen in a subprocess (the device
count is fixed when jax starts), both modes in one; the 1-device reference runs in-process.
All on the tiny config, with the default-sized test split (acc compared to 0.005)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from agm_jax.train import loop
from tests.conftest import ROOT, device_env, tiny_config

pytestmark = pytest.mark.slow

MODES = ("sharding", "pmap")


def config(mode):
  return tiny_config(method="agm", num_epochs=2, **{"parallel.mode": mode,
                                                    "data.synthetic_options.num_test": 1200})


def run_result(run, state, summary, workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train = [json.loads(x) for x in f if '"train"' in x][-1]
  host = jax.tree.leaves(state)   # (fit returns the host copy)
  return {"loss": train["loss"], "acc": summary["final"]["acc"],
          "devices": run.dp.num_devices, "kappa": train.get("kappa/audio"),
          "host_devices": max(len(x.devices()) for x in host)}


SCRIPT = r"""
import json, os, sys
from agm_jax.train import loop
from tests.test_parallel import config, run_result
out = {}
for mode in sys.argv[2:]:
  workdir = os.path.join(sys.argv[1], mode)
  run, state, summary = loop.fit(config(mode), workdir)
  out[mode] = run_result(run, state, summary, workdir)
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  assert jax.device_count() == 1
  workdir = str(tmp_path_factory.mktemp("one"))
  run, state, summary = loop.fit(config("sharding"), workdir)
  return run_result(run, state, summary, workdir)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
  """Both modes in one 4-device process: one interpreter start, one import."""
  env = device_env(4)
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("four")),
                        *MODES], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1]
  return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("mode", MODES)
def test_one_vs_four_devices(one_device, four_devices, mode):
  one, four = one_device, four_devices[mode]
  print(mode, one, four)
  assert one["devices"] == 1
  assert four["devices"] == 4
  assert abs(four["loss"] - one["loss"]) <= 0.01 * abs(one["loss"])
  assert abs(four["acc"] - one["acc"]) <= 0.005
  assert abs(four["kappa"] - one["kappa"]) <= 0.01 * abs(one["kappa"])
  if mode == "pmap":   # the host copy is one device's shard: no program over all devices
    assert four["host_devices"] == 1


FOREIGN = r"""
import functools, json
import jax, jax.numpy as jnp, numpy as np, optax
from agm_jax import modulation, shapley
from agm_jax.train import parallel

MODS = ("a", "v")
rng = np.random.default_rng(0)
x = {"a": rng.normal(size=(16, 5)).astype(np.float32),
     "v": rng.normal(size=(16, 3)).astype(np.float32)}
y = rng.integers(0, 4, 16)
params = {"a": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32),
          "v": jnp.asarray(rng.normal(size=(3, 6)), jnp.float32),
          "head": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)}

def logits_fn(p, d):
  return jnp.concatenate([jnp.tanh(d[m] @ p[m]) for m in MODS], -1) @ p["head"]

def make_step(axis_name):
  tx = optax.chain(modulation.agm(1.0, num_modalities=2, axis_name=axis_name), optax.sgd(0.1))
  def step(p, s, xb, yb):
    grads, aux = shapley.per_modality_grads(logits_fn, p, xb, yb, MODS)
    if axis_name:
      grads = jax.lax.pmean(grads, axis_name)
    u, s = tx.update(grads, s, p, mono_ce=aux["mono_ce"])
    return optax.apply_updates(p, u), s
  return tx, step

tx, step = make_step(None)
p1, s1 = jax.jit(step)(params, tx.init(params), x, y)
txp, stepp = make_step(parallel.AXIS)
n = jax.device_count()
rep = lambda t: jax.tree.map(lambda a: jnp.stack([a] * n), t)
shard = lambda t: jax.tree.map(lambda a: a.reshape(n, -1, *a.shape[1:]), t)
p4, s4 = jax.pmap(stepp, axis_name=parallel.AXIS)(rep(params), rep(txp.init(params)),
                                                  shard(x), shard(y))
kappa4 = np.asarray(s4[0].kappa)
print("RESULT", json.dumps({
    "devices": n, "same_kappa_on_devices": bool(np.allclose(kappa4, kappa4[0])),
    "kappa_err": float(np.abs(kappa4[0] - np.asarray(s1[0].kappa)).max()),
    "param_err": max(float(np.abs(np.asarray(a[0]) - np.asarray(b)).max())
                     for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(p1)))}))
"""


def test_agm_transform_in_a_foreign_pmap_loop():
  env = device_env(4)
  out = subprocess.run([sys.executable, "-c", FOREIGN], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1][7:])
  assert result["devices"] == 4 and result["same_kappa_on_devices"]
  assert result["kappa_err"] < 1e-5 and result["param_err"] < 1e-5
