r"""Step-time benchmark: train steps of several methods at a config's real input shapes.

  python -m agm_jax.tools.bench --config=configs/cremad_agm.py --batch_size=16
  python -m agm_jax.tools.bench --config=configs/cremad_agm.py --variants=joint,agm,ogm_ge,mslr

Times the jitted train step of each ``--variants`` entry on random inputs of the config's
shapes (``config.data.synthetic``): ``joint``, ``agm`` (masked passes with batch statistics),
``agm_eval_bn`` (AGM with eval-mode BatchNorm in the masked passes, the released code's), or
any method name (``agm_jax.methods.NAMES``, batch-statistics masked passes), each optionally
with ``@key=value`` setting a ``subsets`` field (``agm@path=generic``: the whole model per
subset) or ``@seeds=N`` (``config.num_seeds``; ``agm@seeds=4``: four seeds as one step),
with ``@program=vmap|unroll|auto`` (``config.seed_program``) choosing how that step maps the
seeds. Every variant is compiled and warmed up (``--warmup`` steps) first; then ``--steps``
rounds each time one step of every variant in turn (interleaved, each synchronised with
``block_until_ready``), so a drift in the machine's speed reaches all variants alike.
``--config.parallel.mode=pmap`` times the pmap step (the batch split over the devices).

The LAST stdout line is one JSON object: per variant ``<name>_step_s`` (the median),
``<name>_spread_s`` (min, quartiles, max), ``<name>_first_step_s`` (with compilation),
``<name>_flops`` (XLA's cost analysis of the compiled step, ``train.steps.step_flops``: one
device's program, so per device under pmap or a sharded jit) and, beside joint,
``<name>_over_joint`` (ratio of the medians) and ``<name>_over_joint_rounds`` (median of the
per-round ratios); a variant that cannot run on the config (a method needing another fusion)
gives ``<name>_error`` instead. Also ``batch_size``, ``steps``, ``devices``,
``parallel_mode``, ``backend`` and ``peak_rss_mb``.

``--reference_dir=CODE_DIR`` (a clone of the released AGM code, lihong2303/AGM_ICCV2023; needs
PyTorch; a CREMA-D config) adds the released code's CREMA-D joint and AGM steps
(``agm_jax.tools.released``: their own process, stepped in the same rounds as the JAX
variants): ``released_joint_step_s``, ``released_agm_step_s``, their spreads, and
``joint_over_released_joint``, ``agm_eval_bn_over_released_agm`` (the same protocol: the
released AGM step's masked passes use eval-mode BatchNorm), ``agm_over_released_agm``
(batch-statistics masked passes beside it); or ``released_error`` saying why
not (no PyTorch, no ``model/`` folder, another dataset). ``--reference_python`` runs them
under another interpreter (an environment with PyTorch and absl-py). The JAX side then
allocates device memory on demand (``XLA_PYTHON_CLIENT_PREALLOCATE=false``) so both fit on one
GPU. ``--hlo_stats`` adds ``<name>_hlo``: the compiled step's top-level op counts (fusions,
convolutions, custom calls: the kernels a GPU launches per step, what bounds a small-batch
step there).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import data_pipelines
from agm_jax import methods, xla_flags
from agm_jax.tools import released as released_lib
from agm_jax.train import seeds as seeds_lib
from agm_jax.train.loop import Run
from agm_jax.train.steps import step_flops
from data_pipelines.sources.random_inputs import random_batch


def define_flags() -> None:
  """The command line (defined only when run as a program, so importing this module beside
  another tool's flags is safe)."""
  config_flags.DEFINE_config_file("config", "configs/cremad_agm.py", "Config file.")
  flags.DEFINE_integer("batch_size", 16, "Batch size of the timed steps.")
  flags.DEFINE_integer("steps", 5, "Timed rounds (one step of each variant per round).")
  flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation (the first few are "
                       "slower on CPU).")
  flags.DEFINE_list("variants", ["joint", "agm", "agm_eval_bn"],
                    "Steps to time: joint, agm, agm_eval_bn or any method name.")
  flags.DEFINE_string("dtype", "", "Override config.model.dtype (e.g. bfloat16).")
  flags.DEFINE_string("reference_dir", "", "A clone of the released AGM code (holding model/): "
                      "its CREMA-D joint and AGM steps are timed beside ours "
                      "(agm_jax.tools.released; needs PyTorch).")
  flags.DEFINE_string("reference_python", "", "The Python that runs the released steps (one "
                      "with PyTorch and absl-py; default: this one).")
  flags.DEFINE_bool("hlo_stats", False, "Add each variant's kernel counts (the compiled "
                    "step's top-level ops: fusions, convolutions, custom calls).")


# Named variants; any other name is a method (agm_jax.methods.NAMES) with batch-statistics
# masked passes.
VARIANTS = {"joint": ("joint", "batch"), "agm": ("agm", "batch"),
            "agm_eval_bn": ("agm", "eval")}


def variant_config(config, name: str):
  """The config of one timed variant: ``agm_eval_bn`` is AGM with the masked passes in eval
  BatchNorm mode; every other name is that method with batch-statistics masked passes. A
  suffix ``@key=value`` (repeatable) sets a ``subsets`` field, e.g. ``agm@path=generic`` (the
  whole model per subset), or with ``seeds=N`` trains N seeds as one step
  (``config.num_seeds``; ``agm@seeds=4``), and ``program=vmap|unroll|auto`` picks how
  (``config.seed_program``; ``agm@seeds=4@program=vmap``)."""
  base, *options = name.split("@")
  method, subset_bn = VARIANTS.get(base, (base, "batch"))
  c = copy.deepcopy(config)
  with c.unlocked():
    c.method, c.subsets.bn = method, subset_bn
    for option in options:
      key, sep, value = option.partition("=")
      if sep and key == "seeds" and value.isdigit() and int(value) >= 1:
        c.num_seeds = int(value)
        continue
      if sep and key == "program" and value in seeds_lib.PROGRAMS:
        c.seed_program = value
        continue
      if not sep or key not in c.subsets:
        raise ValueError(f"variant {name!r}: {option!r} is not <subsets key>=<value>, "
                         f"seeds=<N> or program=<{'|'.join(seeds_lib.PROGRAMS)}>; subsets "
                         f"keys: {', '.join(c.subsets)}")
      c.subsets[key] = value
  return c


class Released:
  """The released PyTorch steps in their own process (``agm_jax.tools.released --serve``),
  stepped one call at a time so their rounds interleave with the JAX variants'."""

  def __init__(self, code_dir: str, batch_size: int, python: str = ""):
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    self.proc = subprocess.Popen(
        [python or sys.executable, "-m", "agm_jax.tools.released", "--serve",
         f"--code_dir={os.path.abspath(code_dir)}", f"--batch_size={batch_size}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=package_root)   # agm_jax importable from another Python's environment
    first = self.proc.stdout.readline().strip()
    if first != "ready":
      self.proc.wait(timeout=60)
      lines = (self.proc.stderr.read() or first).strip().splitlines()
      raise RuntimeError(lines[-1] if lines else f"exit code {self.proc.returncode}")
    self.times = {name: [] for name in released_lib.VARIANTS}

  def step(self, name: str) -> float:
    self.proc.stdin.write(name + "\n")
    self.proc.stdin.flush()
    answer = self.proc.stdout.readline().strip()
    try:
      return float(answer)
    except ValueError:
      raise RuntimeError(answer or self.proc.stderr.read().strip()) from None

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


class Timed:
  """One variant's compiled step, state and batch, stepped one call at a time."""

  def __init__(self, config, dataset, batch):
    self.run = Run(config, dataset=dataset)
    self.state = self.run.dp.put_state(self.run.init_state())  # laid out for parallel.mode
    self.batch = self.run.dp.put_batch(batch)
    self.active = np.bool_(True)
    self.times: list[float] = []
    # num_seeds > 1: the seeds' mapped step on their stacked states
    self.train_step = self.run.train_step_seeds if self.run.stacked else self.run.train_step

  def step(self) -> float:
    t0 = time.perf_counter()
    self.state, metrics = self.train_step(self.state, self.batch, self.active)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t0

  def flops(self):
    return step_flops(self.train_step, self.state, self.batch, self.active)

  def hlo_stats(self) -> dict:
    return hlo_stats(self.train_step.lower(self.state, self.batch, self.active).compile()
                     .as_text())


KERNEL_OPS = ("fusion", "convolution", "custom-call", "while", "copy")


def hlo_stats(text: str) -> dict:
  """Counts of the top-level instructions of a compiled step's entry computation (optimised
  HLO text): ``ops`` in all, and each of :data:`KERNEL_OPS`. On a GPU, at small batches, the
  step is bound by kernel launches, which these count."""
  entry = text[text.index("\nENTRY"):] if "\nENTRY" in text else text
  entry = entry[:entry.find("\n}") + 1 or None]
  ops = collections.Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", entry))
  return {"ops": sum(ops.values()), **{k: ops.get(k, 0) for k in KERNEL_OPS}}


# Our variant -> the released step it is set beside. The released AGM step runs its masked
# passes with eval-mode BatchNorm, so ``agm_eval_bn`` is its like-for-like counterpart; ``agm``
# (batch-statistics masked passes) is set beside it too, under its own name.
RELEASED_COUNTERPART = {"joint": "joint", "agm": "agm", "agm_eval_bn": "agm"}


def released_ratios(ours: dict, released: dict) -> dict:
  """``<ours>_over_released_<step>``: the median of our variant's step times over the median
  of its released counterpart's, for each pair present in both."""
  return {f"{name}_over_released_{step}": round(
              statistics.median(ours[name]) / statistics.median(released[step]), 3)
          for name, step in RELEASED_COUNTERPART.items() if name in ours and step in released}


def spread(times) -> dict:
  """Min, quartiles and max of a variant's step times (seconds)."""
  q1, q3 = np.percentile(times, [25, 75])
  return {"min": round(min(times), 6), "q1": round(float(q1), 6), "q3": round(float(q3), 6),
          "max": round(max(times), 6)}


def benchmark(config, *, batch_size: int, steps: int, warmup: int, variants, dtype: str = "",
              reference_dir: str = "", reference_python: str = "", with_hlo: bool = False):
  """Every variant compiled and warmed up, then timed round by round, interleaved (round r
  times one step of each variant in turn), so a drift in the machine's speed reaches all of
  them alike. Per variant: the median step, its spread, and against joint the ratio of the
  medians and the median of the per-round ratios."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.synthetic = True
    config.batch_size = batch_size
    config.competition.enabled = False
    config.num_seeds = 1
    if dtype:
      config.model.dtype = dtype
  dataset = data_pipelines.load(config.data, seed=config.seed)
  batch = random_batch(dataset.spec, dataset.num_classes, batch_size,
                       label_shape=tuple(getattr(dataset, "label_shape", ())))
  result = {"config": config.get("name", ""), "batch_size": batch_size,
            "devices": jax.device_count(), "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "dtype": config.model.dtype,
            "modalities": list(dataset.modalities), "fusion": config.model.fusion,
            "parallel_mode": config.parallel.mode, "steps": steps, "interleaved": True}
  timed = {}
  for name in variants:
    try:
      timed[name] = Timed(variant_config(config, name), dataset, batch)
    except ValueError as e:   # e.g. a method that needs another fusion
      result[f"{name}_error"] = str(e)
      continue
    first = timed[name].step()   # compilation
    result[f"{name}_first_step_s"] = round(first, 2)
    result[f"{name}_flops"] = timed[name].flops()
    if with_hlo:
      result[f"{name}_hlo"] = timed[name].hlo_stats()
    for _ in range(warmup):
      timed[name].step()
  released = None
  if reference_dir:
    try:
      if config.data.name != "cremad":
        raise RuntimeError("the released steps are CREMA-D's; use a cremad config")
      released = Released(reference_dir, batch_size, reference_python)
      for name in released.times:
        for _ in range(warmup + 1):
          released.step(name)
    except (RuntimeError, OSError) as e:
      result["released_error"] = str(e)
      released = None
  for _ in range(steps):
    for t in timed.values():
      t.times.append(t.step())
    if released is not None:
      for name, times in released.times.items():
        times.append(released.step(name))
  if released is not None:
    released.close()
    for name, times in released.times.items():
      result[f"released_{name}_step_s"] = float(f"{statistics.median(times):.4g}")
      result[f"released_{name}_spread_s"] = spread(times)
    result.update(released_ratios({n: t.times for n, t in timed.items()}, released.times))
  for name, t in timed.items():
    median = statistics.median(t.times)
    result[f"{name}_step_s"] = float(f"{median:.4g}")
    result[f"{name}_spread_s"] = spread(t.times)
    print(f"{name:12s} median {median:.4f} s over {steps} interleaved steps (min "
          f"{min(t.times):.4f}, max {max(t.times):.4f}; first step incl. compile "
          f"{result[f'{name}_first_step_s']:.1f} s)", file=sys.stderr, flush=True)
  if "joint" in timed:
    joint = timed["joint"].times
    for name, t in timed.items():
      if name != "joint":
        result[f"{name}_over_joint"] = round(result[f"{name}_step_s"] / result["joint_step_s"], 3)
        result[f"{name}_over_joint_rounds"] = round(statistics.median(
            [a / b for a, b in zip(t.times, joint)]), 3)
  result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  return result


def main(argv):
  del argv
  xla_flags.use_cpu_defaults()   # before JAX starts: XLA reads its flags once
  f = flags.FLAGS
  valid = (*VARIANTS, *methods.NAMES)
  unknown = [v for v in f.variants if v.split("@")[0] not in valid]
  if unknown:
    print(f"error: unknown variant {unknown[0]!r}; valid: {', '.join(dict.fromkeys(valid))} "
          "(each optionally with @<subsets key>=<value>)",
          file=sys.stderr)
    sys.exit(2)
  if f.reference_dir:   # PyTorch's process needs device memory too: JAX allocates on demand
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  result = benchmark(f.config, batch_size=f.batch_size, steps=f.steps,
                     warmup=f.warmup, variants=f.variants, dtype=f.dtype,
                     reference_dir=f.reference_dir,
                     reference_python=f.reference_python, with_hlo=f.hlo_stats)
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
