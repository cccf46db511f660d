"""Every ``python -m agm_jax.…`` / ``python -m data_pipelines.…`` command the README, the docs
and the package's own usage lines show parses with that program's flags: a renamed or removed
flag fails here, not in a user's shell. All commands are parsed in one subprocess (the programs
define their absl flags globally; each one's are removed again before the next)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, documented_commands

# Programs that take positional arguments (workdirs); the others take flags only.
POSITIONAL = {"agm_jax.tools.report", "agm_jax.tools.linear_probe"}

# (where, module, argv) of each documented command with arguments (one without is a mention,
# e.g. "``python -m agm_jax.tools.report`` starts without JAX"); commands built from an
# f-string (``{name}``) are left out.
COMMANDS = [c for c in documented_commands(r"-m (?P<name>(?:agm_jax|data_pipelines)(?:\.\w+)+)",
                                           sources=True)
            if c[2] and not any("{" in a for a in c[2])]

# Run in a fresh interpreter (cwd ROOT, so ``--config=configs/…`` loads): for each command,
# import the program, define its flags as ``__main__`` would, parse, then remove them again.
_PARSE_ALL = r"""
import importlib, json, sys
from absl import flags
results = {}
for where, module, argv in json.load(sys.stdin):
  before, program = set(flags.FLAGS), None
  try:
    program = importlib.import_module(module)
    if hasattr(program, "parse_args"):            # argparse (report)
      program.parse_args(argv)
      rest = []
    else:
      sys.argv = [module, *argv]   # config_flags defines the --config.x overrides it names
      if hasattr(program, "define_flags"):
        program.define_flags()
      rest = flags.FLAGS(sys.argv)[1:]
    results[where] = {"error": None, "rest": rest}
  except BaseException as e:                       # argparse exits; absl raises
    results[where] = {"error": f"{type(e).__name__}: {e}", "rest": []}
  flags.FLAGS.unparse_flags()
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)
  if program is not None and not hasattr(program, "define_flags"):
    sys.modules.pop(module, None)                  # flags defined on import: import again
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def parsed():
  out = subprocess.run([sys.executable, "-c", _PARSE_ALL], cwd=ROOT, text=True,
                       capture_output=True, timeout=300,
                       input=json.dumps(COMMANDS))
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_docs_show_each_program():
  modules = {m for _, m, _ in COMMANDS}
  assert modules >= {"agm_jax.tools.bench", "agm_jax.tools.epoch_bench",
                     "agm_jax.tools.speed_report", "agm_jax.tools.linear_probe",
                     "agm_jax.tools.report", "agm_jax.tools.released",
                     "data_pipelines.benchmark", "data_pipelines.builders.prepare",
                     "data_pipelines.builders.mosei_tbje.keys"}, modules
  assert any(w.startswith("README.md") for w, _, _ in COMMANDS)


@pytest.mark.parametrize("where,module,argv", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_documented_tool_command_parses(parsed, where, module, argv):
  result = parsed[where]
  assert result["error"] is None, (module, argv, result["error"])
  if module not in POSITIONAL:
    assert result["rest"] == [], f"{module} takes no positional arguments: {result['rest']}"
