"""Shared test settings and helpers: JAX on CPU, fast XLA compiles shared through a persistent
cache, the hypothesis profile for slow CPU JIT, the tiny trainer config, launch.py runners.

Compiling (not running) is most of this suite's time: tiny models on tiny data. So, set
through environment variables before jax is imported, which the subprocesses the tests start
(launch.py runs, forced-device-count scripts) inherit:

* a persistent compilation cache: a program compiled once by the test run or any of its
  subprocesses is loaded from disk afterwards. ``$AGM_JAX_TEST_XLA_CACHE`` (``off`` disables
  it), else ``$XDG_CACHE_HOME/agm_jax/xla_test_cache`` (``~/.cache/agm_jax/xla_test_cache``).
* on CPU, cheaper XLA code generation (``FAST_COMPILE_FLAGS``: LLVM at -O0, the classic fusion
  emitters; about 3-5x faster compiles, same HLO optimisations). ``AGM_JAX_TEST_FAST_COMPILE=0``
  compiles with XLA's defaults; a level or emitter choice already in XLA_FLAGS wins.
"""

import collections
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import sys
import time
import warnings

from agm_jax import xla_flags  # no JAX import: the flags below are set before it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFF = xla_flags.OFF   # the values that switch a setting off, as the library reads them
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _xla_cache_dir():
  value = os.environ.get("AGM_JAX_TEST_XLA_CACHE", "")
  if value.lower() in OFF:
    return None
  if value:
    return os.path.abspath(os.path.expanduser(value))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "agm_jax", "xla_test_cache")


XLA_CACHE_DIR = _xla_cache_dir()
if XLA_CACHE_DIR:
  os.makedirs(XLA_CACHE_DIR, exist_ok=True)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ["JAX_PLATFORMS"] == "cpu":
  # the entry points' XLA:CPU settings (so the launch.py runs below need not probe for them)
  # and, unless switched off, the fast-compile flags; only those this jaxlib accepts
  _wanted = list(xla_flags.CPU_DEFAULTS) if xla_flags.enabled() else []
  if os.environ.get("AGM_JAX_TEST_FAST_COMPILE", "1").lower() not in OFF:
    _wanted += FAST_COMPILE_FLAGS
  os.environ["XLA_FLAGS"] = xla_flags.with_defaults(
      os.environ.get("XLA_FLAGS", ""), lambda f: xla_flags.accepted(f, XLA_CACHE_DIR), _wanted)
if XLA_CACHE_DIR:
  _CACHE_ENV = {"JAX_COMPILATION_CACHE_DIR": XLA_CACHE_DIR,
                # every program, however small or quick to compile (the defaults skip those
                # under 1 s of compile time, which is most of this suite's)
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  os.environ.update(_CACHE_ENV)
  if "jax" in sys.modules:   # imported before this file (a plugin): set it directly too
    import jax  # noqa: E402
    for _name, _value in _CACHE_ENV.items():
      _type = int if _name.endswith("BYTES") else (float if _name.endswith("SECS") else str)
      jax.config.update(_name.lower(), _type(_value))

from hypothesis import settings  # noqa: E402

settings.register_profile("agm", max_examples=20, deadline=None, derandomize=True)
settings.load_profile("agm")


def device_env(devices, **extra):
  """The environment of a subprocess seeing ``devices`` CPU devices (the test run's XLA_FLAGS
  and compilation cache settings kept)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags), **extra)


# --------------------------------------------------------------------------- tiny trainer

TINY_DATA = dict(num_train=256, num_dep=64, num_test=64, dim_audio=8, dim_visual=8,
                 memo_dim=0, visual_scale=1.0, audio_reliability=0.9)


def tiny_config(**overrides):
  """The default config on a tiny synthetic task (8 steps an epoch) and a tiny MLP;
  ``overrides`` are dotted keys, e.g. ``tiny_config(**{"model.fusion": "sum"})``."""
  from configs import default as default_config  # noqa: PLC0415
  c = default_config.get_config()
  c.num_epochs = 2
  c.batch_size = 32
  c.eval_batch_size = 64
  c.log_every_steps = 4
  c.checkpoint_every_steps = 5
  c.competition.enabled = False
  c.data.synthetic_options = TINY_DATA
  c.model.encoder_default = dict(type="mlp", hidden=(16,), features=16)
  c.model.fusion_options.maxout_hidden = 16
  c.optimizer.learning_rate = 0.05
  for key, value in overrides.items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return c


def write_k3_npz(folder):
  """A three-modality npz folder (a, b, c: 4 features each, a the most informative; 3
  classes; train 64, dep 32, test 32)."""
  import numpy as np  # noqa: PLC0415
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", 64), ("dep", 32), ("test", 32)):
    label = rng.integers(0, 3, n)
    arrays = {m: (rng.normal(size=(n, 4)) + scale * np.eye(3, 4)[label]).astype(np.float32)
              for m, scale in (("a", 2.0), ("b", 1.0), ("c", 0.5))}
    np.savez(os.path.join(folder, f"{split}.npz"), label=label, **arrays)
  return folder


def read_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def wait_for_checkpoint(workdir, proc, timeout=300):
  """Waits until ``workdir`` has a checkpoint while ``proc`` runs."""
  directory = os.path.join(workdir, "checkpoints")
  t0 = time.time()
  while time.time() - t0 < timeout:
    if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
      return
    assert proc.poll() is None, "run ended before its first checkpoint"
    time.sleep(0.05)
  raise TimeoutError


def doc_block(path, heading):
  """The first ```python block after ``heading`` in the file ``path`` (relative to ROOT): a
  documented example, for a test that keeps it runnable."""
  with open(os.path.join(ROOT, path)) as f:
    text = f.read()
  return text[text.index(heading):].split("```python\n", 1)[1].split("```", 1)[0]


# The modules of configs/: the experiment configs (each with get_config()) and paper.py (the
# rules the paper configs share).
CONFIG_MODULES = tuple(sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                              if f.endswith(".py") and not f.startswith("_")))


def experiment_configs():
  """``{name: config}`` of every config module with a ``get_config()``."""
  import importlib  # noqa: PLC0415
  modules = {name: importlib.import_module(f"configs.{name}") for name in CONFIG_MODULES}
  return {name: m.get_config() for name, m in modules.items() if hasattr(m, "get_config")}


def documented_paths(sources=False):
  """Where users read commands (relative to ROOT): README.md, docs/*.md and configs/*.py (each
  paper config's docstring opens with the commands that reproduce it); with ``sources`` also
  every other .py file of launch.py, agm_jax and data_pipelines (usage lines in docstrings and
  messages)."""
  def listed(folder, suffix):
    return sorted(os.path.join(folder, f) for f in os.listdir(os.path.join(ROOT, folder))
                  if f.endswith(suffix) and not f.startswith("_"))
  paths = ["README.md", *listed("docs", ".md"), *(f"configs/{n}.py" for n in CONFIG_MODULES)]
  if sources:
    paths.append("launch.py")
    for package in ("agm_jax", "data_pipelines"):
      for folder, _, files in sorted(os.walk(os.path.join(ROOT, package))):
        paths += sorted(os.path.relpath(os.path.join(folder, f), ROOT) for f in files
                        if f.endswith(".py"))
  return paths


# A documented command's arguments end at a line's end, a markdown cell (" | "), inline code, a
# string's or a call's end in Python source, a shell comment or separator.
_ARGS = r"(?P<args>(?:(?! \| )[^\n`\"#;&)])*)"


def documented_commands(program, *, sources=False):
  """``(where, name, argv)`` of every ``python <program> …`` command in
  :func:`documented_paths` (``where`` = ``path:i``): ``program`` is a regex, its group
  ``name`` (if any) the ``name``. Continuation lines are joined, the shell loop variables
  ``$m`` / ``$i`` given a value, and the docs' placeholders for optional parts removed:
  ``[…]`` brackets dropped (the flag inside kept), ``…`` and ``...`` dropped."""
  pattern = re.compile(rf"python3? {program}{_ARGS}")
  commands = []
  for path in documented_paths(sources):
    with open(os.path.join(ROOT, path)) as f:
      text = f.read().replace("\\\n", " ")
    for i, match in enumerate(pattern.finditer(text)):
      args = match["args"].replace("…", " ").replace("...", " ")
      args = args.replace("$m", "agm").replace("$i", "0")
      argv = [t.strip("[]") for t in args.split() if t.strip("[]")]
      commands.append((f"{path}:{i}", match.groupdict().get("name") or "", argv))
  return commands


# --------------------------------------------------------------------------- launch.py

def launch_cmd(workdir, *extra, config="default.py"):
  return [sys.executable, os.path.join(ROOT, "launch.py"),
          f"--config={os.path.join(ROOT, 'configs', config)}", f"--workdir={workdir}", *extra]


LaunchResult = collections.namedtuple("LaunchResult", "returncode stdout stderr")


def _launch_module():
  """launch.py imported once per process (its absl flags are global)."""
  module = sys.modules.get("launch")
  if module is None or os.path.dirname(os.path.abspath(module.__file__)) != ROOT:
    spec = importlib.util.spec_from_file_location("launch", os.path.join(ROOT, "launch.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["launch"] = module
    spec.loader.exec_module(module)
  return module


def _reset_flags():
  from absl import flags  # noqa: PLC0415
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)   # the --config.x overrides are defined while parsing
  flags.FLAGS.unparse_flags()


def launch_in_process(workdir, *extra, config="default.py", check=False, run=True):
  """launch.py's flag parsing and main in this process: the exit code (0 when main returns)
  and what it printed. ``config_flags`` reads the overrides from ``sys.argv``. ``run=False``
  stops before training: the flags parsed and the config validated, as main does first."""
  launch = _launch_module()
  argv = ["launch.py", f"--config={os.path.join(ROOT, 'configs', config)}",
          f"--workdir={workdir}", *extra]
  out, err, code = io.StringIO(), io.StringIO(), 0
  # launch.py's app.run sends warnings logged through the logging module to stderr
  handler = logging.StreamHandler(err)
  handler.setLevel(logging.WARNING)
  logging.getLogger().addHandler(handler)
  saved_argv = sys.argv
  _reset_flags()
  sys.argv = argv
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
        warnings.catch_warnings():
      # config_flags loads the config file with importlib's deprecated load_module
      warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
      parsed = launch.parse_flags(argv)
      if run:
        launch.main(parsed)
      else:
        from agm_jax.train import validate  # noqa: PLC0415
        validate.validate_config(launch._CONFIG.value)
  except SystemExit as e:
    code = 0 if e.code is None else e.code
  finally:
    logging.getLogger().removeHandler(handler)
    sys.argv = saved_argv
    _reset_flags()
  result = LaunchResult(code, out.getvalue(), err.getvalue())
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


# --------------------------------------------------------------------------- scheduling

# The longest modules, longest first (multi-process runs, forced-device and signalled
# subprocesses, the ResNet compiles) start first: with pytest-xdist's ``--dist loadscope``
# (whole modules per worker, in this order) the two workers then finish together.
START_FIRST = ("test_multiprocess.py", "test_methods.py", "test_reliability.py",
               "test_faults.py", "test_table4_models.py", "test_schedule_methods_e.py",
               "test_balance_methods_c.py", "test_train.py", "test_speed.py",
               "test_sample_method.py", "test_pipeline_speed.py", "test_parallel.py",
               "test_competition.py", "test_seeds.py")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: START_FIRST.index(item.path.name)
             if item.path.name in START_FIRST else len(START_FIRST))
