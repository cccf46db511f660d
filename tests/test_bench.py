"""The step-time benchmark (agm_jax/tools/bench.py): variants timed interleaved, any method by
name, the JSON keys, and a method that cannot run on the config reported, not raised."""

import subprocess
import sys

import pytest

from agm_jax.tools import bench
from configs import default
from tests.conftest import ROOT


def test_interleaved_variants_and_keys():
  result = bench.benchmark(default.get_config(), batch_size=32, steps=3, warmup=1,
                           variants=["joint", "agm", "mslr", "greedy"], with_hlo=True)
  assert result["interleaved"] and result["steps"] == 3
  for name in ("joint", "agm", "mslr"):
    spread = result[f"{name}_spread_s"]
    assert spread["min"] <= result[f"{name}_step_s"] <= spread["max"]
    assert result[f"{name}_flops"] > 0
  for name in ("agm", "mslr"):
    assert result[f"{name}_over_joint"] > 0 and result[f"{name}_over_joint_rounds"] > 0
  assert "needs" in result["greedy_error"] or "mmtm" in result["greedy_error"]
  assert "greedy_step_s" not in result
  # AGM's extra kernels: the masked fusion-head passes (the MLP encoders have no convolutions)
  assert result["agm_hlo"]["fusion"] > result["joint_hlo"]["fusion"] > 0
  assert result["joint_hlo"]["convolution"] == 0


def test_unknown_variant_is_one_line():
  proc = subprocess.run([sys.executable, "-m", "agm_jax.tools.bench",
                         "--config=configs/default.py", "--variants=joint,agm3"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown variant 'agm3'")


def test_released_steps_protocol_and_missing_pieces(tmp_path):
  """The released-code harness answers one step per line; without PyTorch or the released
  model/ folder the benchmark reports why in one line instead of timing it."""
  import io  # noqa: PLC0415

  from agm_jax.tools import released  # noqa: PLC0415

  class Fake:
    def timed(self, name):
      return {"joint": 0.5, "agm": 1.25}[name]

  out = io.StringIO()
  released.serve(Fake(), stdin=io.StringIO("joint\nbogus\n\nagm\n"), stdout=out)
  assert out.getvalue().splitlines() == [
      "ready", "0.500000", "error: unknown step 'bogus'; valid: joint, agm", "1.250000"]
  with pytest.raises(RuntimeError, match="torch|model/ folder"):
    bench.Released(str(tmp_path), 2)
  result = bench.benchmark(default.get_config(), batch_size=32, steps=1, warmup=0,
                           variants=["joint"], reference_dir=str(tmp_path))
  assert result["released_error"] == "the released steps are CREMA-D's; use a cremad config"
