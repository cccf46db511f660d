r"""Fault injection: kill a tiny ``launch.py`` run at chosen moments, run it again, and compare
with an uninterrupted run (final checkpoint and every metrics line, wall-time fields aside).

A *moment* is ``(phase, occurrence, delay)``: the ``occurrence``-th time the run is seen
entering ``phase``, plus ``delay`` seconds. The phases are read from outside, by polling the
workdir and the concept cache (nothing in the program is instrumented):

* ``concept``: a mono-modal concept is being trained (its cache directory has a run in it and
  no ``concept.npz`` yet);
* ``concept_checkpoint`` / ``checkpoint``: a checkpoint of a concept run / of the main run is
  being written (orbax's ``*.orbax-checkpoint-tmp*`` directory exists);
* ``train``: a new train line appeared in the main ``metrics.jsonl`` (training goes on);
* ``eval``: an epoch's last train line is written and its val line is not (evaluation);
* ``metrics``: the main ``metrics.jsonl`` just grew (a metrics write).

Where the signal actually landed is recorded too (a checkpoint directory half written, a
concept half trained, an evaluation pending), since a moment can be passed by the time the
signal arrives.

The full sweep (``python -m tests.fault_sweep --kills=20``) draws moments from a seeded RNG,
spread over the phases, for SIGKILL and SIGTERM, and prints one row per kill and a table.
``tests/test_faults.py`` runs three moments in the default suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 8
ARGS = ["--config.num_epochs=2", "--config.batch_size=32", "--config.eval_batch_size=64",
        "--config.checkpoint_every_steps=3", "--config.log_every_steps=2",
        "--config.data.synthetic_options.num_train=256",
        "--config.data.synthetic_options.num_dep=64",
        "--config.data.synthetic_options.num_test=64",
        "--config.model.encoder_default.hidden=(16,)",
        "--config.model.encoder_default.features=16"]
PHASES = ("concept", "concept_checkpoint", "checkpoint", "train", "eval", "metrics")
# How many times each phase happens in one whole run of ARGS (2 concepts of 16 steps, 16 main
# steps: checkpoints at 3, 6, 8, 9, 12, 15, 16; a train line every 2 steps).
OCCURRENCES = {"concept": 2, "concept_checkpoint": 14, "checkpoint": 7, "train": 8, "eval": 2,
               "metrics": 12}
MAX_DELAY = {"concept": 1.5, "concept_checkpoint": 0.0, "checkpoint": 0.0, "train": 0.2,
             "eval": 0.05, "metrics": 0.0}


def fault_args(cache: str) -> list[str]:
  return [*ARGS, f"--config.competition.cache_dir={cache}"]


def launch_cmd(workdir: str, cache: str) -> list[str]:
  return [sys.executable, os.path.join(ROOT, "launch.py"),
          f"--config={os.path.join(ROOT, 'configs', 'default.py')}", f"--workdir={workdir}",
          *fault_args(cache)]


# --------------------------------------------------------------------------- observing

def _lines(path: str) -> list[str]:
  try:
    with open(path) as f:
      return f.read().splitlines()
  except OSError:
    return []


def _tmp_dirs(directory: str) -> set[str]:
  try:
    return {d for d in os.listdir(directory) if "tmp" in d}
  except OSError:
    return set()


def observe(workdir: str, cache: str) -> dict:
  """What the run is doing, as seen from outside."""
  state = {"concept": [], "concept_ckpt_tmp": set(), "ckpt_tmp": set(), "metrics_size": 0,
           "train_lines": 0, "eval_pending": False}
  if os.path.isdir(cache):
    for name in sorted(os.listdir(cache)):
      d = os.path.join(cache, name)
      if os.path.isdir(d) and not os.path.exists(os.path.join(d, "concept.npz")) and \
          os.path.exists(os.path.join(d, "config.json")):
        state["concept"].append(name)
      state["concept_ckpt_tmp"] |= {f"{name}/{t}" for t in
                                    _tmp_dirs(os.path.join(d, "checkpoints"))}
  state["ckpt_tmp"] = _tmp_dirs(os.path.join(workdir, "checkpoints"))
  path = os.path.join(workdir, "metrics.jsonl")
  try:
    state["metrics_size"] = os.path.getsize(path)
  except OSError:
    pass
  parsed = []
  for raw in _lines(path):
    try:
      parsed.append(json.loads(raw))
    except ValueError:
      continue
  train = [x for x in parsed if x.get("split") == "train"]
  state["train_lines"] = len(train)
  if train and train[-1]["step"] % STEPS_PER_EPOCH == 0:
    state["eval_pending"] = not any(x.get("split") == "val" and x["epoch"] == train[-1]["epoch"]
                                    for x in parsed)
  return state


def landed(state: dict) -> str:
  """Where a signal sent in ``state`` landed."""
  if state["ckpt_tmp"]:
    return "checkpoint write"
  if state["concept_ckpt_tmp"]:
    return "concept checkpoint write"
  if state["concept"]:
    return "concept training"
  if state["eval_pending"]:
    return "evaluation"
  return "training" if state["train_lines"] else "start-up"


class Trigger:
  """Counts the occurrences of one phase between successive observations."""

  def __init__(self, phase: str):
    self.phase, self.count, self.seen = phase, 0, set()
    self.previous = None

  def update(self, state: dict) -> None:
    p = self.phase
    if p == "concept":
      new = set(state["concept"]) - self.seen
    elif p == "concept_checkpoint":
      new = state["concept_ckpt_tmp"] - self.seen
    elif p == "checkpoint":
      new = state["ckpt_tmp"] - self.seen
    elif p == "train":
      new = {("train", state["train_lines"])} - self.seen if state["train_lines"] else set()
    elif p == "eval":
      new = {("eval", state["train_lines"])} - self.seen if state["eval_pending"] else set()
    else:   # metrics
      size = state["metrics_size"]
      new = {("metrics", size)} - self.seen if self.previous is not None and \
          size != self.previous else set()
      self.previous = size
    self.seen |= new
    self.count += len(new)


def run_until(workdir: str, cache: str, moment, sig: int, *, env=None, timeout: float = 300,
              poll_s: float = 0.002) -> dict:
  """Starts the run, sends ``sig`` at ``moment`` = ``(phase, occurrence, delay)`` (None: no
  signal) and waits for it to end. Returns what happened."""
  proc = subprocess.Popen(launch_cmd(workdir, cache), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
  result = {"moment": moment, "signal": signal.Signals(sig).name, "sent": False,
            "landed": None}
  trigger = Trigger(moment[0]) if moment else None
  t0, fire_at = time.time(), None
  while proc.poll() is None and moment is not None and time.time() - t0 < timeout:
    if fire_at is None:
      trigger.update(observe(workdir, cache))
      if trigger.count >= moment[1]:
        fire_at = time.time() + moment[2]
    if fire_at is not None and time.time() >= fire_at:
      result["landed"] = landed(observe(workdir, cache))
      proc.send_signal(sig)
      result["sent"] = True
      break
    time.sleep(poll_s)
  out, err = proc.communicate(timeout=timeout)
  result.update(returncode=proc.returncode, stdout=out, stderr=err,
                seconds=round(time.time() - t0, 1))
  return result


# --------------------------------------------------------------------------- comparing

def final_state(workdir: str):
  import orbax.checkpoint as ocp  # noqa: PLC0415
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    return mngr.restore(mngr.latest_step())


def metric_lines(workdir: str) -> list[dict]:
  """Every metrics line without its wall-time fields (``*_s``)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(x).items() if not k.endswith("_s")} for x in f]


def differences(workdir: str, reference: str) -> list[str]:
  """What differs from the uninterrupted run (empty: nothing)."""
  import jax  # noqa: PLC0415
  problems = []
  a, b = final_state(workdir), final_state(reference)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  if jax.tree.structure(a) != jax.tree.structure(b):
    problems.append("checkpoint structure differs")
  elif not all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)):
    problems.append("final state differs")
  la, lb = metric_lines(workdir), metric_lines(reference)
  if la != lb:
    problems.append(f"metrics lines differ ({len(la)} vs {len(lb)} lines)")
  return problems


# --------------------------------------------------------------------------- the sweep

def draw_moments(n: int, seed: int) -> list[tuple]:
  """``n`` moments spread over the phases (each phase in turn, in a shuffled order), with a
  random occurrence and delay."""
  rng = random.Random(seed)
  phases = [PHASES[i % len(PHASES)] for i in range(n)]
  rng.shuffle(phases)
  return [(p, rng.randint(1, OCCURRENCES[p]), round(rng.uniform(0, MAX_DELAY[p]), 3))
          for p in phases]


def trial(base: str, moment, sig: int, reference: str, env=None) -> dict:
  """One kill and one rerun in a fresh workdir and concept cache."""
  workdir, cache = os.path.join(base, "run"), os.path.join(base, "cache")
  shutil.rmtree(base, ignore_errors=True)
  killed = run_until(workdir, cache, moment, sig, env=env)
  rerun = run_until(workdir, cache, None, sig, env=env)
  out = {k: killed[k] for k in ("moment", "signal", "sent", "landed", "returncode")}
  out["rerun_returncode"] = rerun["returncode"]
  out["took_over_lock"] = "taking over the lock" in rerun["stderr"]
  out["resumed"] = "Resuming from checkpoint" in rerun["stdout"]
  out["problems"] = (differences(workdir, reference) if rerun["returncode"] == 0 else
                     [f"rerun failed: {rerun['stderr'][-500:]}"])
  return out


def sweep_env(cache_dir: str) -> dict:
  """The environment of the runs: JAX on CPU, a persistent compilation cache."""
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache_dir,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=20, help="moments per signal")
  parser.add_argument("--signals", default="SIGKILL,SIGTERM")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--base", default="/tmp/agm_jax_fault_sweep")
  parser.add_argument("--xla_cache", default="",
                      help="persistent compilation cache (default: BASE/xla_cache)")
  args = parser.parse_args(argv)
  env = sweep_env(args.xla_cache or os.path.join(args.base, "xla_cache"))
  reference = os.path.join(args.base, "reference")
  shutil.rmtree(reference, ignore_errors=True)
  t0 = time.time()
  ref = run_until(os.path.join(reference, "run"), os.path.join(reference, "cache"), None,
                  signal.SIGKILL, env=env)
  assert ref["returncode"] == 0, ref["stderr"][-2000:]
  print(f"uninterrupted run: {ref['seconds']} s", flush=True)
  reference = os.path.join(reference, "run")
  rows = []
  for name in args.signals.split(","):
    sig = getattr(signal, name)
    for i, moment in enumerate(draw_moments(args.kills, args.seed)):
      row = trial(os.path.join(args.base, f"{name}-{i}"), moment, sig, reference, env)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print(f"\n{len(rows)} trials in {time.time() - t0:.0f} s")
  print("| signal | planned phase | kills sent | landed in | rerun exact | lock taken over |")
  print("|---|---|---|---|---|---|")
  for name in args.signals.split(","):
    for phase in PHASES:
      sel = [r for r in rows if r["signal"] == name and r["moment"][0] == phase]
      if not sel:
        continue
      where = sorted({r["landed"] for r in sel if r["landed"]})
      print(f"| {name} | {phase} | {sum(r['sent'] for r in sel)}/{len(sel)} | "
            f"{', '.join(where)} | {sum(not r['problems'] for r in sel)}/{len(sel)} | "
            f"{sum(r['took_over_lock'] for r in sel)} |")
  bad = [r for r in rows if r["problems"]]
  for r in bad:
    print("PROBLEM", r)
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
