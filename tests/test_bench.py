"""The step-time benchmark (agm_jax/tools/bench.py): variants timed interleaved, any method by
name, the JSON keys, and a method that cannot run on the config reported, not raised."""

import subprocess
import sys

from agm_jax.tools import bench
from configs import default
from tests.conftest import ROOT


def test_interleaved_variants_and_keys():
  result = bench.benchmark(default.get_config(), batch_size=32, steps=3, warmup=1,
                           variants=["joint", "agm", "mslr", "greedy"])
  assert result["interleaved"] and result["steps"] == 3
  for name in ("joint", "agm", "mslr"):
    spread = result[f"{name}_spread_s"]
    assert spread["min"] <= result[f"{name}_step_s"] <= spread["max"]
    assert result[f"{name}_flops"] > 0
  for name in ("agm", "mslr"):
    assert result[f"{name}_over_joint"] > 0 and result[f"{name}_over_joint_rounds"] > 0
  assert "needs" in result["greedy_error"] or "mmtm" in result["greedy_error"]
  assert "greedy_step_s" not in result


def test_unknown_variant_is_one_line():
  proc = subprocess.run([sys.executable, "-m", "agm_jax.tools.bench",
                         "--config=configs/default.py", "--variants=joint,agm3"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown variant 'agm3'")
