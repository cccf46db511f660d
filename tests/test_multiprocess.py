"""Multi-process runs on localhost (jax.distributed, CPU collectives over gloo) against one
process: the same metrics, concepts and checkpoints; a signal to one process stops both at the
same step, and the pair resumes (in the other parallel mode, on more devices: checkpoints are
written in one layout whatever the topology). The multi-process runs are ``launch.py`` in
subprocesses, the one-process reference and the error check run launch's main in-process; all on
a tiny synthetic task and MLP."""

import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from agm_jax.train import parallel
from tests.conftest import ROOT, device_env, launch_in_process, wait_for_checkpoint

SMALL = ["--config.num_epochs=3", "--config.batch_size=32", "--config.eval_batch_size=64",
         "--config.checkpoint_every_steps=4", "--config.log_every_steps=4",
         "--config.data.synthetic_options.num_train=384",
         "--config.data.synthetic_options.num_dep=96",
         "--config.data.synthetic_options.num_test=96",
         "--config.data.synthetic_options.dim_audio=8",
         "--config.data.synthetic_options.dim_visual=8",
         "--config.data.synthetic_options.memo_dim=0",
         "--config.model.encoder_default.hidden=(16,)",
         "--config.model.encoder_default.features=16"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _args(cache, *extra):
  return [f"--config.competition.cache_dir={cache}", *SMALL, *extra]


def _cmd(workdir, cache, *extra):
  return [sys.executable, os.path.join(ROOT, "launch.py"),
          f"--config={os.path.join(ROOT, 'configs', 'default.py')}", f"--workdir={workdir}",
          *_args(cache, *extra)]


def start(workdir, cache, *extra, processes=2, devices=1, use_env=False):
  """``processes`` launch.py processes joined through a coordinator on localhost (given by
  flags, or with ``use_env`` by the JAX_* environment variables)."""
  port, procs = _free_port(), []
  for i in range(processes):
    if use_env:
      flags, env = [], device_env(devices, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                  JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
    else:
      flags = [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
               f"--process_id={i}"]
      env = device_env(devices)
    procs.append(subprocess.Popen(_cmd(workdir, cache, *extra, *flags), cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return procs


def finish(procs):
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(x) for x in f]


def final_state(workdir):
  """The latest checkpoint as numpy arrays (it was written on another device topology)."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                             item_handlers=ocp.StandardCheckpointHandler()) as mngr:
    step = mngr.latest_step()
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), mngr.item_metadata(step))
    return step, mngr.restore(step, args=ocp.args.StandardRestore(target))


def assert_same_run(workdir, reference):
  """Same metric lines (to float32 reduction-order noise) and the same final state."""
  a, b = lines(workdir), lines(reference)
  assert [(x["step"], x["split"]) for x in a] == [(x["step"], x["split"]) for x in b]
  for x, y in zip(a, b):
    for key, value in y.items():
      if isinstance(value, float) and key != "probe_s":
        assert x[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (x["step"], key)
  (step_a, state_a), (step_b, state_b) = final_state(workdir), final_state(reference)
  assert step_a == step_b
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5),
               state_a, state_b)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """The reference: one process, one device (this one)."""
  assert jax.process_count() == 1 and jax.device_count() == 1
  workdir = str(tmp_path_factory.mktemp("one"))
  cache = str(tmp_path_factory.mktemp("cache_one"))
  launch_in_process(workdir, *_args(cache), check=True)
  return workdir, cache


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_signal(tmp_path, one_process):
  """sharding mode, 2 processes × 1 device (coordinator given by flags): SIGTERM to process 1
  only stops both at the same step with one checkpoint. The pair resumes in pmap mode,
  2 processes × 2 devices, the coordinator given by the JAX_* variables, and ends where one
  process does."""
  workdir, cache = str(tmp_path / "two"), str(tmp_path / "cache_two")
  procs = start(workdir, cache)
  wait_for_checkpoint(workdir, procs[0])
  procs[1].send_signal(signal.SIGTERM)
  (out0, _), (out1, _) = finish(procs)
  assert "final test" not in out1 and "wrote" not in out1   # only process 0 reports
  assert "a signal to another process: saved a checkpoint at step" in out0, out0[-2000:]
  stopped = int(out0.split("saved a checkpoint at step ")[1].split()[0])
  assert stopped % 4 == 0 and stopped < 36   # at a log line, where the processes agree
  (out0, _), _ = finish(start(workdir, cache, "--config.parallel.mode=pmap", devices=2,
                              use_env=True))
  assert f"Resuming from checkpoint at step {stopped}" in out0
  assert "final test" in out0
  assert_same_run(workdir, one_process[0])
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert {"competition/audio", "competition/visual"} <= set(summary["final"])
  assert set(os.listdir(cache)) == set(os.listdir(one_process[1]))   # the same concept keys


def test_incomplete_multiprocess_settings_are_one_line_errors(tmp_path, monkeypatch):
  for name in parallel.ENV:
    monkeypatch.delenv(name, raising=False)
  out = launch_in_process(str(tmp_path), *_args(str(tmp_path), "--num_processes=2"))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: a multi-process run needs")
  assert "coordinator_address, process_id" in out.stderr


def test_initialize_checks_its_settings(monkeypatch):
  for name in parallel.ENV:
    monkeypatch.delenv(name, raising=False)
  assert parallel.initialize() is False            # nothing asked: a single-process run
  assert parallel.initialize(num_processes=1) is False
  with pytest.raises(ValueError, match="missing coordinator_address"):
    parallel.initialize(num_processes=2, process_id=0)
  with pytest.raises(ValueError, match=r"process_id must be in \[0, num_processes\)"):
    parallel.initialize("localhost:1", 2, 2)
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="num_processes must be an integer"):
    parallel.initialize()
