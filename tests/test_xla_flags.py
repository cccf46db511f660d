"""agm_jax.xla_flags: the XLA:CPU settings the entry points add to XLA_FLAGS — only flags this
jaxlib accepts (XLA aborts on an unknown one), never one the user already set, none when
switched off or once JAX's backends exist."""

import os
import subprocess
import sys

import pytest

from agm_jax import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def everything(flags):
  return list(flags)


def test_cpu_defaults_are_added_to_the_users_flags():
  out = xla_flags.with_defaults("--xla_dump_to=/tmp/d", accepted=everything)
  assert out == f"--xla_dump_to=/tmp/d {YNN}=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
  assert xla_flags.with_defaults("", accepted=everything) == \
      f"{YNN}=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


def test_a_flag_the_user_set_wins():
  mine = f"{YNN}=LIBRARY_FUSION_TYPE_DOT"
  assert xla_flags.with_defaults(mine, accepted=everything) == mine


def test_a_flag_this_jaxlib_does_not_know_is_left_out():
  asked = []
  out = xla_flags.with_defaults("--a=1", accepted=lambda f: asked.extend(f) or [])
  assert out == "--a=1" and asked == list(xla_flags.CPU_DEFAULTS)


def test_use_cpu_defaults_sets_the_environment_and_can_be_switched_off(monkeypatch):
  monkeypatch.setattr(xla_flags, "_backends_exist", lambda: False)
  monkeypatch.setattr(xla_flags, "accepted", lambda flags, cache_dir=None: list(flags))
  monkeypatch.setenv("XLA_FLAGS", "--a=1")
  monkeypatch.setenv("AGM_JAX_XLA_DEFAULTS", "0")
  assert xla_flags.use_cpu_defaults() is False and os.environ["XLA_FLAGS"] == "--a=1"
  monkeypatch.delenv("AGM_JAX_XLA_DEFAULTS")
  assert xla_flags.use_cpu_defaults() is True
  assert os.environ["XLA_FLAGS"].split() == ["--a=1", *xla_flags.CPU_DEFAULTS]
  monkeypatch.setattr(xla_flags, "_backends_exist", lambda: True)   # too late: no change
  monkeypatch.setenv("XLA_FLAGS", "--a=1")
  with pytest.warns(UserWarning, match="after JAX started"):
    assert xla_flags.use_cpu_defaults() is False and os.environ["XLA_FLAGS"] == "--a=1"


def test_accepted_probes_this_jaxlib_and_remembers(tmp_path):
  """The real probe: XLA's own flag is accepted, a made-up one is not (and the process that
  probes survives XLA's abort); the answer is remembered per jaxlib version."""
  bogus = "--xla_agm_jax_no_such_flag=1"
  assert xla_flags.accepted(["--xla_cpu_enable_fast_math=false", bogus], str(tmp_path)) == \
      ["--xla_cpu_enable_fast_math=false"]
  assert [p.name for p in tmp_path.iterdir()][0].startswith("accepted_xla_flags-jaxlib-")


def test_a_fresh_process_gets_them_before_jax_starts(tmp_path):
  """The real thing: a new process (no test XLA_FLAGS, no memo) probes its jaxlib and adds
  the defaults it accepts; its first computation then runs."""
  code = ("import os; from agm_jax import xla_flags; import jax;"
          "ok = xla_flags.use_cpu_defaults(); jax.numpy.ones(2).block_until_ready();"
          "print(ok, os.environ['XLA_FLAGS'])")
  env = dict(os.environ, XLA_FLAGS="", XDG_CACHE_HOME=str(tmp_path))
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  ok, _, flags = out.stdout.strip().partition(" ")
  assert ok == "True" and flags.split() == list(xla_flags.CPU_DEFAULTS)


ENTRY_POINTS = ("launch.py", "agm_jax/tools/bench.py", "agm_jax/tools/epoch_bench.py",
                "agm_jax/tools/linear_probe.py")


def test_every_jax_entry_point_uses_them():
  for path in ENTRY_POINTS:
    with open(os.path.join(ROOT, path)) as f:
      assert "xla_flags.use_cpu_defaults()" in f.read(), path
