"""Per-method config overrides: a paper config whose rows used different settings per method.

The released AGM code builds a different late-fusion model per method: AGM's model has a
concat head, every other method (joint training, OGM-GE, MSLR, MSES) a sum head. One config per
dataset and fusion still selects the row with ``--config.method=``; its ``per_method`` section
says what changes for which method::

    c.model.fusion = "sum"
    c.per_method = {"agm": {"model": {"fusion": "concat"}}}

:func:`resolve` applies the entry of ``config.method`` (a nested dict of config keys) once,
before anything reads the config, and empties ``per_method``: the resolved config is what the
run records (``config.json``) and what the mono-modal concepts derive from. A key given on
the command line is overridden too; ``per_method`` is the config author's statement of what
the row ran.
"""

from __future__ import annotations

import copy

from agm_jax import methods


def _entries(config) -> dict:
  section = config.get("per_method") if hasattr(config, "get") else None
  if not section:
    return {}
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def _leaves(overrides, prefix=()):
  """``(path, value)`` for every leaf of a nested override dict."""
  for key, value in overrides.items():
    if isinstance(value, dict) or hasattr(value, "to_dict"):
      value = value.to_dict() if hasattr(value, "to_dict") else value
      yield from _leaves(value, (*prefix, key))
    else:
      yield (*prefix, key), value


def _target(config, path):
  node = config
  for i, part in enumerate(path):
    if not hasattr(node, "keys") or part not in node:
      raise ValueError(f"per_method key {'.'.join(path)!r}: the config has no "
                       f"{'.'.join(path[:i + 1])!r}")
    if i < len(path) - 1:
      node = node[part]
  return node, path[-1]


def check(config) -> None:
  """Every ``per_method`` entry names a method and existing config keys."""
  for method, overrides in _entries(config).items():
    if method not in methods.NAMES:
      raise ValueError(f"per_method entry {method!r} is not a method; valid: "
                       f"{', '.join(methods.NAMES)}")
    for path, _ in _leaves(overrides):
      _target(config, path)


def resolve(config):
  """A copy of ``config`` with ``per_method[config.method]`` applied and ``per_method``
  emptied (the config itself when it has nothing to apply)."""
  entries = _entries(config)
  if not entries:
    return config
  check(config)
  out = copy.deepcopy(config)
  with out.unlocked():
    for path, value in _leaves(entries.get(config.method, {})):
      node, last = _target(out, path)
      node[last] = value
    out.per_method = {}
  return out
