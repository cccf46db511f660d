r"""Step-time benchmark: joint vs AGM train steps at a config's real input shapes.

  python -m agm_jax.tools.bench --config=configs/cremad_agm.py --batch_size=16

Times the jitted train step of ``joint``, ``agm`` with ``subset_bn="batch"`` and ``agm`` with
``subset_bn="eval"`` on random inputs of the config's shapes (``config.data.synthetic``):
compilation and ``--warmup`` steps excluded, then the median of ``--steps`` steps, each
synchronised with ``block_until_ready``. ``--config.parallel.mode=pmap`` times the pmap step
(the batch split over the devices). The LAST stdout line is one JSON object with
``joint_step_s``, ``agm_step_s``, ``agm_eval_bn_step_s``, their ratios to joint,
``joint_flops``, ``agm_flops``, ``agm_eval_bn_flops`` (XLA's cost analysis of the compiled
step, ``train.steps.step_flops``: one device's program, so per device under pmap or a sharded
jit), ``batch_size``, ``devices``, ``parallel_mode``, ``backend`` and ``peak_rss_mb``.
"""

from __future__ import annotations

import copy
import json
import resource
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import data_pipelines
from agm_jax.train.loop import Run
from agm_jax.train.steps import step_flops
from data_pipelines.sources.random_inputs import random_batch

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cremad_agm.py", "Config file.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Batch size of the timed steps.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per variant (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation (the first "
                                "few are slower on CPU).")
_VARIANTS = flags.DEFINE_list("variants", ["joint", "agm", "agm_eval_bn"],
                              "Which steps to time.")
_DTYPE = flags.DEFINE_string("dtype", "", "Override config.model.dtype (e.g. bfloat16).")

VARIANTS = {"joint": ("joint", "batch"), "agm": ("agm", "batch"),
            "agm_eval_bn": ("agm", "eval")}


def time_step(config, dataset, batch, *, steps: int, warmup: int) -> dict:
  run = Run(config, dataset=dataset)
  state = run.dp.put_state(run.init_state())   # laid out for config.parallel.mode
  batch = run.dp.put_batch(batch)
  active = np.bool_(True)
  t0 = time.perf_counter()
  state, metrics = run.train_step(state, batch, active)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, metrics = run.train_step(state, batch, active)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = run.train_step(state, batch, active)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "times_s": times,
          "first_step_s": compile_s, "flops": step_flops(run.train_step, state, batch, active)}


def benchmark(config, *, batch_size: int, steps: int, warmup: int, variants, dtype: str = ""):
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.synthetic = True
    config.batch_size = batch_size
    config.competition.enabled = False
    if dtype:
      config.model.dtype = dtype
  dataset = data_pipelines.load(config.data, seed=config.seed)
  batch = random_batch(dataset.spec, dataset.num_classes, batch_size,
                       label_shape=tuple(getattr(dataset, "label_shape", ())))
  result = {"config": config.get("name", ""), "batch_size": batch_size,
            "devices": jax.device_count(), "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "dtype": config.model.dtype,
            "modalities": list(dataset.modalities), "fusion": config.model.fusion,
            "parallel_mode": config.parallel.mode}
  for name in variants:
    method, subset_bn = VARIANTS[name]
    c = copy.deepcopy(config)
    with c.unlocked():
      c.method, c.subsets.bn = method, subset_bn
    timing = time_step(c, dataset, batch, steps=steps, warmup=warmup)
    key = "agm_step_s" if name == "agm" else f"{name}_step_s"
    result[key] = float(f"{timing['median_s']:.4g}")
    result[f"{name}_first_step_s"] = round(timing["first_step_s"], 2)
    result[f"{name}_flops"] = timing["flops"]
    print(f"{name:12s} median {timing['median_s']:.4f} s over {steps} steps "
          f"(first step incl. compile {timing['first_step_s']:.1f} s)", file=sys.stderr,
          flush=True)
  if "joint_step_s" in result:
    for name in ("agm", "agm_eval_bn"):
      key = "agm_step_s" if name == "agm" else f"{name}_step_s"
      if key in result:
        result[f"{name}_over_joint"] = round(result[key] / result["joint_step_s"], 3)
  result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  return result


def main(argv):
  del argv
  unknown = [v for v in _VARIANTS.value if v not in VARIANTS]
  if unknown:
    print(f"error: unknown variant {unknown[0]!r}; valid: {', '.join(VARIANTS)}",
          file=sys.stderr)
    sys.exit(2)
  result = benchmark(_CONFIG.value, batch_size=_BATCH.value, steps=_STEPS.value,
                     warmup=_WARMUP.value, variants=_VARIANTS.value, dtype=_DTYPE.value)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
