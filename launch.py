r"""Trains one experiment: python launch.py --config=configs/NAME.py --workdir=DIR.

Overrides: --config.method=joint --config.seed=1 --config.agm.alpha=0.5 … Running the same
command on a DIR that has checkpoints resumes from the latest. --verbose shows tracebacks.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, summary, checkpoints.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show full tracebacks of errors.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from agm_jax.train import loop, validate  # noqa: PLC0415 - after flags, keeps --help fast
  config = _CONFIG.value
  try:
    if config is None:
      raise validate.ConfigError("--config is required, e.g. --config=configs/default.py")
    validate.validate_config(config)
    workdir = validate.validate_workdir(_WORKDIR.value)
    summary = loop.train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    if _VERBOSE.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  final = summary.get("final", {})
  print("final test: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()
                                   if isinstance(v, float)))
  print(f"wrote {workdir}/metrics.jsonl, summary.json, checkpoints/")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
