"""The step-time benchmark (agm_jax/tools/bench.py): variants timed interleaved, any method by
name, the JSON keys, and a method that cannot run on the config reported, not raised."""

import subprocess
import sys

import pytest

from agm_jax.tools import bench, speed_report
from configs import default
from tests.conftest import ROOT


def test_interleaved_variants_and_keys():
  result = bench.benchmark(default.get_config(), batch_size=32, steps=3, warmup=1,
                           variants=["joint", "agm", "mslr", "greedy", "agm@path=generic",
                                     "agm@bogus=1", "agm@seeds=2"], with_hlo=True)
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
  # a subsets field per variant: the whole model per subset has more kernels than the fast path
  assert result["agm@path=generic_hlo"]["fusion"] > result["agm_hlo"]["fusion"]
  assert "not <subsets key>=<value>" in result["agm@bogus=1_error"]
  # two seeds as one step (the MLP's: vmapped): twice the work of one
  assert result["agm@seeds=2_flops"] > 1.5 * result["agm_flops"]


def test_variant_seed_options():
  c = bench.variant_config(default.get_config(), "agm_eval_bn@seeds=4@program=unroll")
  assert (c.method, c.subsets.bn, c.num_seeds, c.seed_program) == ("agm", "eval", 4, "unroll")
  with pytest.raises(ValueError, match=r"or program=<auto\|vmap\|unroll>"):
    bench.variant_config(default.get_config(), "agm@seeds=2@program=pmap")


def test_speed_report_parts_and_summary():
  """The speed report's parts (commands, one subprocess part with its JSON line, one out of
  time) and the summary's ratios from hand-made results."""
  class F:
    parts, config, batch_sizes = ["step", "loader"], "configs/default.py", ["16", "64"]
    variants, extra_variants, steps, warmup = ["joint", "agm"], ["agm@seeds=4"], 5, 1
    reference_dir, reference_python, loader_workers, loader_clips = "REF", "", ["0", "2"], 8

  cmds = dict(speed_report.commands(F, ["--config.model.dtype=bfloat16"]))
  assert list(cmds) == ["step_16", "step_64", "loader"]
  assert "--variants=joint,agm,agm@seeds=4" in cmds["step_16"]
  assert "--variants=joint,agm" in cmds["step_64"] and "--reference_dir=REF" in cmds["step_16"]
  assert "--config.model.dtype=bfloat16" in cmds["step_64"]
  assert "--num_workers=0,2" in cmds["loader"]
  ok = speed_report.run_part([sys.executable, "-c", "print('x'); print('{\"a\": 1}')"], 60)
  assert ok["a"] == 1 and "error" not in ok
  slow = speed_report.run_part([sys.executable, "-c", "import time; time.sleep(30)"], 1)
  assert slow["error"].startswith("out of time")
  parts = {"step_16": {"joint_step_s": 1.0, "agm_step_s": 1.1, "agm_over_joint": 1.1,
                       "agm@seeds=4_step_s": 1.76, "agm@seeds=4_first_step_s": 30.0,
                       "agm_over_released_agm": 0.4, "agm_eval_bn_over_released_agm": 0.7},
           "step_64": {"error": "exit code 1"},
           "loader": {"lines": [{"num_workers": 0, "examples_per_s": 400.0},
                                {"num_workers": 2, "examples_per_s": 700.0}]}}
  summary = speed_report.summarise(parts)
  assert summary["step_16"] == {"joint_step_s": 1.0, "agm_step_s": 1.1, "agm_over_joint": 1.1,
                                "agm@seeds=4_over_one_seed": 1.6, "agm_over_released_agm": 0.4,
                                "agm_eval_bn_over_released_agm": 0.7}
  assert summary["step_64"] == {"error": "exit code 1"}
  assert summary["loader"] == {"0": 400.0, "2": 700.0}


def test_unknown_variant_is_one_line():
  proc = subprocess.run([sys.executable, "-m", "agm_jax.tools.bench",
                         "--config=configs/default.py", "--variants=joint,agm3"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown variant 'agm3'")


def test_released_ratios_pair_each_variant_with_the_same_protocol():
  """Ours over the released step of the same protocol: joint over its joint; its AGM step runs
  the masked passes with eval-mode BatchNorm, so agm_eval_bn is its like-for-like counterpart
  and agm (batch statistics) is compared with it under its own name; medians of hand values."""
  ours = {"joint": [2.0, 4.0, 3.0], "agm": [3.0, 3.5, 4.0], "agm_eval_bn": [6.0, 7.0, 8.0],
          "mslr": [3.0]}
  released = {"joint": [1.0, 1.5, 2.0], "agm": [5.0, 5.0, 6.0]}
  assert bench.released_ratios(ours, released) == {
      "joint_over_released_joint": 2.0, "agm_over_released_agm": 0.7,
      "agm_eval_bn_over_released_agm": 1.4}
  assert bench.released_ratios({"joint": [1.0]}, released) == {"joint_over_released_joint": 0.667}


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
