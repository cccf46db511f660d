"""Checks a config before anything is built or compiled: one clear line per mistake."""

from __future__ import annotations

import os
import tempfile

from agm_jax import methods, shapley
from agm_jax.train import forward


class ConfigError(ValueError):
  """A user's mistake in the config or the command line (printed without a traceback)."""


def _need(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _choice(value, valid, what: str) -> None:
  _need(value in valid, f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def validate_config(config) -> None:
  from agm_jax.models import FUSIONS  # noqa: PLC0415 - models import flax
  _choice(config.method, methods.NAMES, "method")
  _choice(config.model.fusion, FUSIONS, "fusion")
  _need(int(config.num_epochs) >= 1, f"num_epochs must be >= 1, got {config.num_epochs}")
  _need(int(config.batch_size) >= 1, f"batch_size must be >= 1, got {config.batch_size}")
  _need(int(config.eval_batch_size) >= 1,
        f"eval_batch_size must be >= 1, got {config.eval_batch_size}")
  agm = config.agm
  _need(agm.alpha >= 0, f"agm.alpha must be >= 0, got {agm.alpha}")
  _need(agm.clip > 0, f"agm.clip must be > 0, got {agm.clip}")
  _need(agm.start_epoch <= agm.end_epoch,
        f"agm.start_epoch ({agm.start_epoch}) must be <= agm.end_epoch ({agm.end_epoch})")
  _choice(agm.subset_bn, forward.SUBSET_BN, "agm.subset_bn")
  _choice(agm.pad, shapley.PADS, "agm.pad")
  _need(int(config.log_every_steps) >= 1, "log_every_steps must be >= 1")
  from agm_jax.train import parallel  # noqa: PLC0415
  _choice(config.get("parallel", {}).get("mode", "sharding"), parallel.MODES, "parallel.mode")
  _need(int(config.checkpoint_every_steps) >= 0, "checkpoint_every_steps must be >= 0")


def validate_workdir(workdir: str | None) -> str:
  _need(bool(workdir), "--workdir is required (where metrics, summary and checkpoints go)")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError(f"workdir {workdir!r} is not writable: {e.strerror}") from None
  return workdir
