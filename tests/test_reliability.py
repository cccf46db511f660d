"""Reliability: exact resume after kill -9, SIGTERM checkpoints, NaN guard, corrupted
checkpoints, and one-line errors for bad data — all through launch.py: the runs interrupted
by a signal in subprocesses, every other run in-process (launch's flag parsing and main).
Exact resume after a SIGTERM is checked in tests/test_faults.py (during an evaluation) and
tests/test_multiprocess.py (to one of two processes)."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import (
  ROOT,
  launch_cmd,
  launch_in_process,
  read_lines,
  tiny_config,
  wait_for_checkpoint,
)

TINY = ["--config.num_epochs=3", "--config.batch_size=32", "--config.eval_batch_size=64",
        "--config.competition.enabled=False", "--config.checkpoint_every_steps=4",
        "--config.log_every_steps=4", "--config.data.synthetic_options.num_train=384",
        "--config.data.synthetic_options.num_dep=64",
        "--config.data.synthetic_options.num_test=64",
        "--config.model.encoder_default.hidden=(16,)",
        "--config.model.encoder_default.features=16"]


def final_state(workdir):
  directory = os.path.join(workdir, "checkpoints")
  with ocp.CheckpointManager(directory) as mngr:
    return mngr.restore(mngr.latest_step())


def read_test_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(x) for x in f if '"split": "test"' in x]


def assert_same_state(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  launch_in_process(workdir, *TINY, check=True)
  return workdir


@pytest.mark.slow
def test_exact_resume_after_kill9(tmp_path, uninterrupted):
  workdir = str(tmp_path / "kill9")
  proc = subprocess.Popen(launch_cmd(workdir, *TINY), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(workdir, proc)
  time.sleep(0.3)
  proc.send_signal(signal.SIGKILL)
  out, _ = proc.communicate(timeout=120)
  resumed = launch_in_process(workdir, *TINY, check=True)
  assert_same_state(final_state(workdir), final_state(uninterrupted))
  assert read_test_lines(workdir) == read_test_lines(uninterrupted)
  if "saved a checkpoint" in out:
    assert "Resuming from checkpoint" in resumed.stdout


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(launch_cmd(workdir, *TINY, "--config.num_epochs=200"), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(workdir, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert "saved a checkpoint at step" in out
  step = int(out.split("saved a checkpoint at step ")[1].split()[0])
  assert str(step) in os.listdir(os.path.join(workdir, "checkpoints"))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  out = launch_in_process(workdir, *TINY, "--config.optimizer.learning_rate=1e12",
                          "--config.optimizer.momentum=0.0")
  assert out.returncode == 3, out.stderr[-2000:]
  message = [x for x in out.stderr.splitlines() if x.startswith("error: non-finite")]
  assert message and "at step" in message[0], out.stderr[-2000:]
  bad_step = int(message[0].split("at step ")[1].split(";")[0].split()[0])
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert all(s < bad_step for s in steps)
  if steps:
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_state(workdir)["params"]))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(x) for x in f]
  assert any(line["step"] == bad_step for line in lines)


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back(tmp_path, uninterrupted):
  workdir = str(tmp_path)
  launch_in_process(workdir, *TINY[1:], "--config.num_epochs=1", check=True)
  directory = os.path.join(workdir, "checkpoints")
  latest = max(int(d) for d in os.listdir(directory) if d.isdigit())
  for root, _, files in os.walk(os.path.join(directory, str(latest))):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  out = launch_in_process(workdir, *TINY, check=True)
  assert "unreadable" in out.stderr
  assert_same_state(final_state(workdir), final_state(uninterrupted))


def write_npz(folder, **overrides):
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", 64), ("dep", 32), ("test", 32)):
    arrays = {"a": rng.normal(size=(n, 4)).astype(np.float32),
              "b": rng.normal(size=(n, 3)).astype(np.float32),
              "label": rng.integers(0, 3, n)}
    if split == "train":
      arrays.update(overrides)
    np.savez(os.path.join(folder, f"{split}.npz"), **arrays)


def _bad_labels():
  y = np.zeros(64, np.int64)
  y[5] = 7
  y[6] = -1
  return y


def _nan_inputs():
  x = np.zeros((64, 4), np.float32)
  x[3, 1] = np.nan
  return x


@pytest.mark.parametrize("overrides,message", [
    ({"a": _nan_inputs()}, "train.npz"),
    ({"label": _bad_labels()}, "label"),
    ({"b": np.zeros((10, 3), np.float32)}, "train.npz"),
])
def test_bad_npz_data_is_one_line(tmp_path, overrides, message):
  write_npz(tmp_path / "data", **overrides)
  out = launch_in_process(str(tmp_path / "run"), "--config.data.dir=" + str(tmp_path / "data"),
                          "--config.data.modalities=a,b", "--config.num_epochs=1",
                          config="npz_mlp.py")
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]


def test_npz_end_to_end_and_missing_modality(tmp_path):
  write_npz(tmp_path / "data")
  ok = launch_in_process(str(tmp_path / "run"), "--config.data.dir=" + str(tmp_path / "data"),
                         "--config.data.modalities=a,b", "--config.num_epochs=1",
                         "--config.batch_size=16", config="npz_mlp.py", check=True)
  assert "final test: acc" in ok.stdout
  bad = launch_in_process(str(tmp_path / "run2"), "--config.data.dir=" + str(tmp_path / "data"),
                          "--config.data.modalities=a,c", config="npz_mlp.py")
  assert bad.returncode == 2 and "'c'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["--config.num_epochs=0"], "num_epochs must be >= 1"),
    (["--config.agm.clip=0"], "agm.clip must be > 0"),
    (["--config.subsets.bn=train"], "valid: eval, batch"),
    (["--config.parallel.mode=tpu"], "valid: sharding, pmap"),
])
def test_validation_before_compile(tmp_path, args, message):
  out = launch_in_process(str(tmp_path), *args)
  assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  out = launch_in_process(str(blocker / "run"))
  assert out.returncode == 2 and "not writable" in out.stderr


class _SignalOnFirstTrainBatch:
  """The dataset, sending this process SIGTERM as the first train batch is read."""

  def __init__(self, dataset):
    self._dataset, self.sent = dataset, False

  def __getattr__(self, name):
    return getattr(self._dataset, name)

  def batches(self, split, **kwargs):
    for batch in self._dataset.batches(split, **kwargs):
      if split == "train" and not self.sent:
        self.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch


def test_a_signal_on_an_epochs_last_step_keeps_its_evaluation(tmp_path):
  """One step per epoch: the stop waits for the epoch's val/test lines and checkpoint, so the
  resumed run has every epoch's evaluation."""
  import data_pipelines  # noqa: PLC0415
  from agm_jax.train import guard, loop  # noqa: PLC0415
  c = tiny_config(method="agm", batch_size=256, num_epochs=2)
  data = _SignalOnFirstTrainBatch(data_pipelines.load(c.data, seed=c.seed))
  with pytest.raises(guard.Preempted):
    loop.fit(c, str(tmp_path), dataset=data)
  assert data.sent
  assert {(x["step"], x["split"]) for x in read_lines(tmp_path)} == {
      (1, "train"), (1, "val"), (1, "test")}
  assert "1" in os.listdir(tmp_path / "checkpoints")
  loop.fit(c, str(tmp_path))
  assert [(x["epoch"], x["split"]) for x in read_lines(tmp_path)] == [
      (0, "train"), (0, "val"), (0, "test"), (1, "train"), (1, "val"), (1, "test")]
