"""Faults a long run meets: a second launch on a busy workdir (the workdir lock), labels the
training split never saw, kills at chosen moments (training, evaluation, checkpoint writes,
concept training), a full disk or an unwritable workdir mid-run, a truncated metrics file, and
two runs training the same concept into the shared cache. The full kill sweep (20 moments per
signal) is ``python -m tests.fault_sweep``; here three moments run in the default suite."""

import builtins
import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from agm_jax.train import atomic, lock, writer
from data_pipelines.sources import loader, npz
from tests import fault_sweep
from tests.conftest import ROOT, launch_in_process
from tests.test_reliability import write_npz

# --------------------------------------------------------------------------- the lock


@pytest.fixture
def live_pid():
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  yield proc.pid
  proc.kill()
  proc.wait()


def _write_lock(workdir, pid, host=None):
  os.makedirs(workdir, exist_ok=True)
  record = {"host": host or socket.gethostname(), "pid": pid, "started": time.time() - 60,
            "process_start": lock._process_start(pid), "token": "t"}
  with open(lock.lock_path(workdir), "w") as f:
    json.dump(record, f)


def test_lock_refuses_a_live_holder(tmp_path, live_pid):
  _write_lock(tmp_path, live_pid)
  with pytest.raises(lock.WorkdirBusy) as e:
    lock.acquire(str(tmp_path))
  message = str(e.value)
  assert "\n" not in message and f"pid {live_pid}" in message
  assert socket.gethostname() in message and "UTC" in message


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  _write_lock(tmp_path, proc.pid)
  with caplog.at_level(logging.WARNING):
    with lock.hold(str(tmp_path)):
      assert lock.read(lock.lock_path(tmp_path))["pid"] == os.getpid()
  assert "taking over the lock" in caplog.text and f"pid {proc.pid}" in caplog.text
  assert not os.path.exists(lock.lock_path(tmp_path))


def test_lock_of_another_host_is_refused_with_advice(tmp_path):
  _write_lock(tmp_path, 12345, host="another-host")
  with pytest.raises(lock.WorkdirBusy, match="another-host.*cannot be checked.*delete"):
    lock.acquire(str(tmp_path))


def test_lock_is_reentrant_and_released_on_error(tmp_path):
  with pytest.raises(KeyError):
    with lock.hold(str(tmp_path)):
      with lock.hold(str(tmp_path)):
        pass
      assert os.path.exists(lock.lock_path(tmp_path))
      raise KeyError("boom")
  assert not os.path.exists(lock.lock_path(tmp_path))


def test_second_launch_on_a_busy_workdir_stops_at_once(tmp_path, live_pid):
  _write_lock(tmp_path, live_pid)
  t0 = time.time()
  out = launch_in_process(str(tmp_path), *fault_sweep.ARGS)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
  assert len(errors) == 1 and f"in use by pid {live_pid}" in errors[0], out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "checkpoints") and time.time() - t0 < 5


# --------------------------------------------------------------------------- labels


def _npz_folder(tmp_path, test_labels=None, val_labels=None):
  folder = tmp_path / "data"
  write_npz(folder, label=np.arange(64) % 3)
  for split, labels in (("test", test_labels), ("val", val_labels)):
    if labels is not None:
      rng = np.random.default_rng(1)
      np.savez(folder / f"{split}.npz", a=rng.normal(size=(len(labels), 4)).astype(np.float32),
               b=rng.normal(size=(len(labels), 3)).astype(np.float32), label=labels)
  return str(folder)


def test_a_label_train_never_saw_stops_before_compiling(tmp_path):
  labels = np.zeros(32, np.int64)
  labels[:3] = [0, 1, 2]
  labels[9] = 7
  folder = _npz_folder(tmp_path, test_labels=labels)
  with pytest.raises(ValueError, match=r"test\.npz: field 'label' value 7 \(example 9\) is "
                                       r"outside 0\.\.2 \(the classes seen in train\.npz"):
    npz.read_folder(folder)
  out = launch_in_process(str(tmp_path / "run"), f"--config.data.dir={folder}",
                          "--config.data.modalities=a,b", config="npz_mlp.py")
  errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
  assert out.returncode == 2 and len(errors) == 1 and "test.npz" in errors[0]
  assert "example 9" in errors[0] and not os.path.exists(tmp_path / "run" / "checkpoints")
  # declared classes: data.num_classes makes 7 a valid class
  _, _, k = npz.read_folder(folder, num_classes=8)
  assert k == 8


def test_a_class_missing_from_a_split_is_a_warning(tmp_path, caplog):
  folder = _npz_folder(tmp_path, test_labels=np.arange(32) % 2)
  with caplog.at_level(logging.WARNING):
    _, _, k = npz.read_folder(folder)
  assert k == 3 and "test.npz" in caplog.text and "[2]" in caplog.text


def test_tfds_batches_check_every_label_position():
  labels = np.zeros((4, 10), np.int32)
  loader.check_labels(labels, 29, np.arange(4))
  labels[2, 6] = 29
  with pytest.raises(ValueError, match=r"record 12 field 'label' position \[6\] value 29 is "
                                       r"outside 0\.\.28"):
    loader.check_labels(labels, 29, np.arange(10, 14))


# --------------------------------------------------------------------------- metrics file


def test_truncated_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2, "split": "train"}\n{"step": 4, "split": "train"}\n{"step": 6, "sp')
  from agm_jax.tools import report  # noqa: PLC0415
  lines, notes = report.read_jsonl(str(path))
  assert [x["step"] for x in lines] == [2, 4] and notes
  with caplog.at_level(logging.WARNING):
    writer.truncate_after(str(path), 4)
  assert "unreadable line(s) [3]" in caplog.text
  assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4]


def test_atomic_write_failing_midway_leaves_the_old_file(tmp_path, monkeypatch):
  target = tmp_path / "concept.npz"
  atomic.savez(str(target), x=np.arange(3))

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match="No space"):
    atomic.savez(str(target), x=np.arange(5))
  monkeypatch.undo()
  with np.load(target) as f:
    assert f["x"].tolist() == [0, 1, 2]
  assert os.listdir(tmp_path) == ["concept.npz"]


# --------------------------------------------------------------------------- the concept cache


def test_two_runs_training_one_concept_share_it(tmp_path):
  cache, logs = str(tmp_path / "cache"), str(tmp_path / "logs")
  os.makedirs(logs)
  cmd = [sys.executable, "-m", "tests.concept_writer", cache, logs]
  procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for _ in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
  trained = [f for f in os.listdir(logs) if f.startswith("trained-")]
  reads = [np.load(os.path.join(logs, f)) for f in sorted(os.listdir(logs))
           if f.startswith("read-")]
  assert len(trained) == 1 and len(reads) == 2
  np.testing.assert_array_equal(reads[0]["dep"], reads[1]["dep"])
  assert any("waiting for pid" in o[0] for o in outs)
  (concept,) = os.listdir(cache)
  assert sorted(os.listdir(os.path.join(cache, concept))) == ["concept.npz"]


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, and its concept cache (shared by the disk-fault runs)."""
  base = tmp_path_factory.mktemp("reference")
  cache = str(base / "cache")
  launch_in_process(str(base / "run"), *fault_sweep.fault_args(cache), check=True)
  return str(base / "run"), cache


def _one_error(out, text):
  assert out.returncode == 2, out.stderr[-3000:]
  # (after a progress bar's carriage return, the line starts the terminal line)
  errors = [x for x in re.split(r"[\r\n]", out.stderr) if x.startswith("error:")]
  assert len(errors) == 1 and text in errors[0], out.stderr[-3000:]
  return errors[0]


def _checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _failing(monkeypatch, module, paths, after, error):
  """``open`` for writing fails with ``error`` (an errno) once ``after`` matching writes have
  succeeded; a failing append first writes half a line (a disk filling mid-write)."""
  real_open, count = builtins.open, [0]

  class Half:
    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

    def write(self, text):
      self.f.write(text[:len(text) // 2])
      self.f.flush()
      raise OSError(error, os.strerror(error))

  def opener(path, mode="r", *args, **kwargs):
    if any(p in str(path) for p in paths) and ("w" in mode or "a" in mode):
      count[0] += 1
      if count[0] > after:
        if "a" in mode:
          return Half(real_open(path, mode, *args, **kwargs))
        raise OSError(error, os.strerror(error), str(path))
    return real_open(path, mode, *args, **kwargs)
  monkeypatch.setattr(module, "open", opener, raising=False)


@pytest.mark.parametrize("where,error", [
    ("metrics", errno.ENOSPC), ("checkpoint", errno.ENOSPC),
    # (the failing write is a metrics append, as with ENOSPC above: slow only)
    pytest.param("workdir", errno.EACCES, marks=pytest.mark.slow)])
def test_disk_full_or_read_only_mid_run_then_resume(tmp_path, monkeypatch, reference, caplog,
                                                    where, error):
  """ENOSPC while appending a metrics line or writing a checkpoint, and the workdir turning
  read-only (EACCES on every write under it; simulated: the tests may run as root, for whom
  chmod does not stop writes): one error line, exit 2, the checkpoints before intact, and the
  rerun resumes to exactly the uninterrupted run."""
  ref, cache = reference
  workdir = str(tmp_path / "run")
  if where == "metrics":
    _failing(monkeypatch, writer, ["metrics.jsonl"], 5, error)
  elif where == "checkpoint":
    _failing(monkeypatch, builtins, ["orbax-checkpoint-tmp"], 12, error)
  else:
    _failing(monkeypatch, builtins, [workdir], 40, error)
  out = launch_in_process(workdir, *fault_sweep.fault_args(cache))
  monkeypatch.undo()
  line = _one_error(out, f"({errno.errorcode[error]})")
  assert "run the same command to resume" in line
  before = _checkpoint_steps(workdir)
  assert before and not os.path.exists(lock.lock_path(workdir))
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  if where == "checkpoint":
    assert f"the last good checkpoint (step {before[-1]}) is intact" in line
  with caplog.at_level(logging.WARNING):
    again = launch_in_process(workdir, *fault_sweep.fault_args(cache), check=True)
  assert "Resuming from checkpoint" in again.stdout
  assert fault_sweep.differences(workdir, ref) == []


def test_kills_at_three_moments_resume_exactly(tmp_path, reference):
  """SIGKILL while a concept trains, SIGKILL while a checkpoint is written, SIGTERM during an
  evaluation: each relaunch resumes (taking over the dead runs' lock); a second launch while
  the first runs stops at once; the end equals the uninterrupted run."""
  ref, _ = reference
  workdir, cache = str(tmp_path / "run"), str(tmp_path / "cache")
  moments = [(("concept", 1, 0.3), signal.SIGKILL), (("checkpoint", 1, 0.0), signal.SIGKILL),
             (("eval", 1, 0.0), signal.SIGTERM)]
  for i, (moment, sig) in enumerate(moments):
    result = fault_sweep.run_until(workdir, cache, moment, sig)
    assert result["sent"], result["stderr"][-2000:]
    if i == 0:
      assert result["landed"] in ("concept training", "concept checkpoint write")
    if sig == signal.SIGTERM:
      assert result["returncode"] == 0 and "saved a checkpoint" in result["stdout"]
    elif i:
      assert "taking over the lock" in result["stderr"]
  busy = subprocess.Popen(fault_sweep.launch_cmd(workdir, cache), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  while not os.path.exists(lock.lock_path(workdir)) and busy.poll() is None:
    time.sleep(0.01)
  second = launch_in_process(workdir, *fault_sweep.fault_args(cache))
  _one_error(second, f"in use by pid {busy.pid}")
  out, err = busy.communicate(timeout=300)
  assert busy.returncode == 0, err[-2000:]
  assert fault_sweep.differences(workdir, ref) == []
