"""Data parallelism: 1 device vs 4 (forced host devices) with sharding and pmap, and the
exported pmap step in a foreign loop. Multi-device runs happen in subprocesses."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
from configs import default
from agm_jax.train import loop
c = default.get_config()
c.num_epochs = 2
c.competition.enabled = False
c.parallel.mode = sys.argv[1]
c.method = sys.argv[2]
run, state, summary = loop.fit(c, sys.argv[3])
lines = [json.loads(l) for l in open(sys.argv[3] + "/metrics.jsonl")]
train = [l for l in lines if l["split"] == "train"][-1]
print("RESULT", json.dumps({"loss": train["loss"], "acc": summary["final"]["acc"],
      "devices": run.dp.num_devices, "kappa": train.get("kappa/audio")}))
"""


def _run(tmp_path, devices, mode, method):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT, mode, method,
                        str(tmp_path / f"{mode}{devices}")], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1]
  return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("mode", ["sharding", "pmap"])
def test_one_vs_four_devices(tmp_path, mode):
  one = _run(tmp_path, 1, "sharding", "agm")
  four = _run(tmp_path, 4, mode, "agm")
  print(mode, one, four)
  assert four["devices"] == 4
  assert abs(four["loss"] - one["loss"]) <= 0.01 * abs(one["loss"])
  assert abs(four["acc"] - one["acc"]) <= 0.005
  assert abs(four["kappa"] - one["kappa"]) <= 0.01 * abs(one["kappa"])
