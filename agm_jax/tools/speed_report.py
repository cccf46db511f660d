r"""Every speed figure of one machine in one command, within a time budget.

  python -m agm_jax.tools.speed_report --out=speed                       # a GPU machine
  python -m agm_jax.tools.speed_report --out=speed --reference_dir=AGM_ICCV2023 --budget_s=540

Runs these parts one after another, each as its own process given what is left of
``--budget_s`` (a slow part cannot take the others' time), and writes each part's JSON line to
``OUT/<part>.json`` as soon as it ends:

* ``step_<B>`` for each ``--batch_sizes`` B: ``agm_jax.tools.bench`` (interleaved rounds) of
  ``--variants``; the first batch size also times ``--extra_variants`` (by default four seeds
  as one step, ``@seeds=4``: vmapped on a GPU) and, with ``--reference_dir``, the released PyTorch
  code's steps;
* ``epoch``: ``agm_jax.tools.epoch_bench`` — fabricated full-size CREMA-D clips through the
  real loader and step: loader alone, step alone, the whole epoch, the time the step waited;
* ``loader``: ``data_pipelines.benchmark`` — loader throughput per worker count.

Then ``OUT/report.json``: every part's result (or its ``error`` and last output lines) and
``summary``: per batch size AGM/joint, eval-BatchNorm AGM/joint, N seeds/one seed and ours
over the released code's steps (``agm_eval_bn_over_released_agm`` is the same protocol as the
released AGM step, whose masked passes use eval-mode BatchNorm); the epoch's
``epoch_over_steps`` and ``wait_fraction``; examples/s per worker count. The same summary is
the LAST stdout line. ``--config`` and every ``--config.*`` override given after ``--`` go to
the step and epoch parts (e.g. ``-- --config.model.dtype=bfloat16``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

PARTS = ("step", "epoch", "loader")


def define_flags() -> None:
  """The command line (defined only when run as a program)."""
  flags.DEFINE_string("out", "speed_report", "Folder for the parts' JSON files.")
  flags.DEFINE_float("budget_s", 540.0, "Seconds for all the parts together.")
  flags.DEFINE_list("parts", list(PARTS), "Parts to run: step, epoch, loader.")
  flags.DEFINE_string("config", "configs/cremad_agm.py", "Config of the step and epoch parts.")
  flags.DEFINE_list("batch_sizes", ["16", "64"], "Batch sizes of the step part.")
  flags.DEFINE_list("variants", ["joint", "agm", "agm_eval_bn"], "bench --variants.")
  flags.DEFINE_list("extra_variants",
                    ["agm@seeds=4", "joint@seeds=4"],
                    "Variants timed at the first batch size only.")
  flags.DEFINE_integer("steps", 20, "bench --steps (interleaved rounds).")
  flags.DEFINE_integer("warmup", 3, "bench --warmup.")
  flags.DEFINE_string("reference_dir", "", "bench --reference_dir (the released AGM code).")
  flags.DEFINE_string("reference_python", "", "bench --reference_python.")
  flags.DEFINE_integer("epoch_clips", 2048, "epoch_bench --num_clips.")
  flags.DEFINE_integer("epoch_batch_size", 64, "epoch_bench --batch_size.")
  flags.DEFINE_integer("epoch_workers", 12, "epoch_bench --num_workers.")
  flags.DEFINE_list("loader_workers", ["0", "4", "8", "12"], "data_pipelines.benchmark "
                    "--num_workers.")
  flags.DEFINE_integer("loader_clips", 512, "data_pipelines.benchmark --num_clips.")


def commands(f, overrides=()) -> list[tuple[str, list[str]]]:
  """``[(part name, argv)]`` of the parts ``f.parts`` asks for, in order."""
  py, out = sys.executable, []
  config = [f"--config={f.config}", *overrides]
  if "step" in f.parts:
    for i, b in enumerate(f.batch_sizes):
      variants = list(f.variants) + (list(f.extra_variants) if i == 0 else [])
      argv = [py, "-m", "agm_jax.tools.bench", *config, f"--batch_size={b}",
              f"--steps={f.steps}", f"--warmup={f.warmup}", "--hlo_stats",
              f"--variants={','.join(variants)}"]
      if i == 0 and f.reference_dir:
        argv.append(f"--reference_dir={f.reference_dir}")
        if f.reference_python:
          argv.append(f"--reference_python={f.reference_python}")
      out.append((f"step_{b}", argv))
  if "epoch" in f.parts:
    out.append(("epoch", [py, "-m", "agm_jax.tools.epoch_bench", *config,
                          f"--num_clips={f.epoch_clips}", f"--batch_size={f.epoch_batch_size}",
                          f"--num_workers={f.epoch_workers}"]))
  if "loader" in f.parts:
    out.append(("loader", [py, "-m", "data_pipelines.benchmark",
                           f"--num_workers={','.join(f.loader_workers)}",
                           f"--num_clips={f.loader_clips}"]))
  return out


def json_lines(text: str) -> list[dict]:
  """The JSON objects among ``text``'s lines."""
  found = []
  for line in text.splitlines():
    line = line.strip()
    if line.startswith("{") and line.endswith("}"):
      try:
        found.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return found


def run_part(argv: list[str], timeout: float) -> dict:
  """One part's result: its last JSON line (``loader``: every line, under ``lines``), or
  ``{"error": …, "tail": last output lines}``."""
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=max(timeout, 1.0))
    text, error = proc.stdout, None if proc.returncode == 0 else f"exit code {proc.returncode}"
  except subprocess.TimeoutExpired as e:
    text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    proc, error = None, f"out of time after {timeout:.0f} s"
  found = json_lines(text)
  result = {"seconds": round(time.perf_counter() - t0, 1)}
  if error or not found:
    stderr = proc.stderr if proc is not None else ""
    result.update(error=error or "no JSON line", tail=(text + stderr).strip().splitlines()[-8:])
    if found:
      result["lines"] = found
    return result
  if len(found) > 1 and all("num_workers" in line for line in found):
    result["lines"] = found
  else:
    result.update(found[-1])
  return result


def _ratio(a, b):
  return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b \
      else None


def summarise(parts: dict) -> dict:
  """The ratios of the module docstring from the parts' results (absent ones left out)."""
  summary = {}
  for name, r in parts.items():
    if name.startswith("step_") and "error" not in r:
      s = {"joint_step_s": r.get("joint_step_s"), "agm_step_s": r.get("agm_step_s"),
           "agm_over_joint": r.get("agm_over_joint"),
           "agm_eval_bn_over_joint": r.get("agm_eval_bn_over_joint")}
      for key in r:   # "<variant>@seeds=N_step_s", not its "_first_step_s" (the compile)
        seeds = re.fullmatch(r"(\w+)@seeds=(\d+)_step_s", key)
        if seeds:
          v, n = seeds.groups()
          s[f"{v}@seeds={n}_over_one_seed"] = _ratio(r[key], r.get(f"{v}_step_s"))
        elif "_over_released_" in key or key == "released_error":   # bench's released_ratios
          s[key] = r[key]
      summary[name] = {k: v for k, v in s.items() if v is not None}
    elif name == "epoch" and "error" not in r:
      summary[name] = {k: r.get(k) for k in ("epoch_over_steps", "wait_fraction",
                                             "loader_examples_per_s", "step_examples_per_s",
                                             "epoch_examples_per_s") if k in r}
    elif name == "loader" and "lines" in r and "error" not in r:
      summary[name] = {str(line["num_workers"]): line["examples_per_s"] for line in r["lines"]}
    if "error" in r:
      summary[name] = {"error": r["error"]}
  return summary


def main(argv):
  f = flags.FLAGS
  overrides = [a for a in argv[1:] if a.startswith("--config.")]   # the words after "--"
  stray = [a for a in argv[1:] if not a.startswith("--config.")]
  if stray:
    print(f"error: {stray[0]!r}: after -- only --config.* overrides", file=sys.stderr)
    return 2
  unknown = [p for p in f.parts if p not in PARTS]
  if unknown:
    print(f"error: unknown part {unknown[0]!r}; valid: {', '.join(PARTS)}", file=sys.stderr)
    return 2
  os.makedirs(f.out, exist_ok=True)
  deadline = time.perf_counter() + f.budget_s
  parts = {}
  for name, part_argv in commands(f, overrides):
    left = deadline - time.perf_counter()
    if left < 5:
      parts[name] = {"error": "not run: the budget was spent"}
      continue
    print(f"[speed_report] {name}: {' '.join(part_argv[1:])} ({left:.0f} s left)", flush=True)
    parts[name] = run_part(part_argv, left)
    with open(os.path.join(f.out, f"{name}.json"), "w") as fh:
      json.dump(parts[name], fh, indent=1)
    print(f"[speed_report] {name}: {parts[name].get('error', 'done')} in "
          f"{parts[name]['seconds']} s", flush=True)
  summary = summarise(parts)
  with open(os.path.join(f.out, "report.json"), "w") as fh:
    json.dump({"parts": parts, "summary": summary}, fh, indent=1)
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
