"""Checks a config before anything is built or compiled: one clear line per mistake."""

from __future__ import annotations

import os
import tempfile

from agm_jax import methods, modalities, subsets
from agm_jax.models import FUSIONS
from agm_jax.models.init import SCHEMES as INIT_SCHEMES
from agm_jax.train import competition, loop, parallel, per_method, seeds


class ConfigError(ValueError):
  """A user's mistake in the config or the command line (printed without a traceback)."""


def _need(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _choice(value, valid, what: str) -> None:
  _need(value in valid, f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def validate_config(config) -> None:
  """The trainer-level settings, the ``subsets`` section and the method's own section (its
  typed hyper-parameters: ranges the transforms check are checked when the run builds them,
  before anything compiles), after the ``per_method`` overrides of the chosen method."""
  try:
    per_method.check(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  config = per_method.resolve(config)
  _choice(config.method, methods.NAMES, "method")
  _choice(config.model.fusion, FUSIONS, "fusion")
  _choice(config.model.init, INIT_SCHEMES, "model.init")
  _need(int(config.num_epochs) >= 1, f"num_epochs must be >= 1, got {config.num_epochs}")
  _need(int(config.batch_size) >= 1, f"batch_size must be >= 1, got {config.batch_size}")
  _need(int(config.eval_batch_size) >= 1,
        f"eval_batch_size must be >= 1, got {config.eval_batch_size}")
  _need(int(config.log_every_steps) >= 1, "log_every_steps must be >= 1")
  _choice(config.parallel.mode, parallel.MODES, "parallel.mode")
  try:
    seeds.count(config)
    seeds.program(config)
    loop.paper_statistic(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  try:
    modalities.parse(config.data.modalities)
    subsets.Settings(**config.subsets)
  except ValueError as e:
    raise ConfigError(f"subsets.{e}" if str(e).split(" ", 1)[0] in config.subsets
                      else str(e)) from None
  try:
    methods.hparams(methods.get(config.method), config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _need(int(config.checkpoint_every_steps) >= 0, "checkpoint_every_steps must be >= 0")
  if config.competition.enabled:
    try:
      competition.check(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  cc = config.optimizer.conditional_clip
  _need(float(cc.threshold) >= 0, "optimizer.conditional_clip.threshold must be >= 0 (0: off), "
        f"got {cc.threshold}")
  _need(float(cc.max_norm) > 0, "optimizer.conditional_clip.max_norm must be > 0, got "
        f"{cc.max_norm}")
  for name in (n.strip() for n in str(cc.methods).split(",") if n.strip()):
    _choice(name, ("*", *methods.NAMES), "optimizer.conditional_clip.methods entry")


def validate_workdir(workdir: str | None) -> str:
  _need(bool(workdir), "--workdir is required (where metrics, summary and checkpoints go)")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError(f"workdir {workdir!r} is not writable: {e.strerror}") from None
  return workdir
