r"""Trains one experiment: python launch.py --config=configs/NAME.py --workdir=DIR.

Overrides: --config.method=joint --config.seed=1 --config.agm.alpha=0.5 … Running the same
command on a DIR that has checkpoints resumes from the latest. --verbose shows tracebacks.

Several processes (hosts): start the same command on each with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (or the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID environment variables), or with --distributed on a cluster JAX detects (SLURM,
Open MPI, Kubernetes). The workdir must be on a filesystem every process shares.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, summary, checkpoints.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show full tracebacks of errors.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordinator "
    "(default $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process: number of processes (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-process: this process's index (default $JAX_PROCESS_ID).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-process: let JAX detect the cluster (SLURM, Open MPI, "
    "Kubernetes, TPU) for whatever the flags above leave unset.")


def _config_key_error(argv, error) -> str:
  """One line naming the bad ``--config.x.y`` override and the keys valid at that level."""
  import importlib.util  # noqa: PLC0415
  paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  try:
    spec = importlib.util.spec_from_file_location("_cfg", paths[-1].split(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # noqa: BLE001 - fall back to the parser's own message
    return f"error: {error}"
  for key in overrides:
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node:
        where = ".".join(parts[:i]) or "the config"
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a group)"
        return f"error: unknown config key --config.{key}; valid keys of {where}: {valid}"
      node = node[part]
  return f"error: {error}"


def parse_flags(argv):
  """absl's flag parsing, with config mistakes reported in one line (no traceback)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    if "--verbose" in argv:
      raise
    print(_config_key_error(argv, e), file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from agm_jax import xla_flags  # noqa: PLC0415 - fast --help
  xla_flags.use_cpu_defaults()   # before JAX starts: XLA reads its flags once
  from agm_jax.train import atomic, guard, lock, loop, parallel, validate  # noqa: PLC0415 - fast --help
  config = _CONFIG.value
  try:
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                        auto=_DISTRIBUTED.value)
    if config is None:
      raise validate.ConfigError("--config is required, e.g. --config=configs/default.py")
    validate.validate_config(config)
    workdir = validate.validate_workdir(_WORKDIR.value)
    summary = loop.train_and_evaluate(config, workdir)
  except guard.Preempted:
    sys.exit(0)
  except guard.NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except (ValueError, FileNotFoundError, parallel.DistributedError, lock.WorkdirBusy,
          atomic.StorageError) as e:
    if _VERBOSE.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if not parallel.is_primary():
    return
  per_seed = summary.get("seeds") or {"": summary}   # num_seeds > 1: one line per seed
  for seed, seed_summary in per_seed.items():
    final = seed_summary.get("final", {})
    print(f"final test{f' (seed {seed})' if seed else ''}: " + "  ".join(
        f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float)))
  if "seeds" in summary:
    print(f"wrote {workdir}/summary.json, checkpoints/ and per seed "
          f"seed_{{{','.join(per_seed)}}}/metrics.jsonl, summary.json")
  else:
    print(f"wrote {workdir}/metrics.jsonl, summary.json, checkpoints/")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=parse_flags)
