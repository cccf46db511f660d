"""The trainer end to end on tiny synthetic data: every fusion x {joint, agm}, metrics schema,
checkpoint resume, and one-line errors for bad input."""

import os
import subprocess

import pytest

from agm_jax.train import loop, validate
from tests.conftest import (
  ROOT,
  documented_commands,
  launch_cmd,
  launch_in_process,
  read_lines,
  tiny_config,
)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["sum", "concat", "maxout", "film", "input_early"])
@pytest.mark.parametrize("method", ["joint", "agm"])
def test_every_fusion_learns(tmp_path, fusion, method):
  c = tiny_config(**{"model.fusion": fusion, "method": method, "num_epochs": 3})
  summary = loop.train_and_evaluate(c, str(tmp_path))
  train = [line for line in read_lines(tmp_path) if line["split"] == "train"]
  assert train[-1]["loss"] < train[0]["loss"]
  assert summary["final"]["acc"] > 0.4   # 6 classes: chance is 0.17


def test_metrics_schema_and_resume(tmp_path):
  c = tiny_config(method="agm", num_epochs=1)
  loop.train_and_evaluate(c, str(tmp_path))
  lines = read_lines(tmp_path)
  assert {line["split"] for line in lines} == {"train", "val", "test"}
  for line in lines:
    for key in ("step", "epoch", "split", "loss", "acc", "acc/audio", "acc/visual",
                "mono_ce/audio", "mono_ce/visual"):
      assert key in line, key
    assert 0 <= line["acc"] <= 1
    if line["split"] == "train":
      assert "kappa/audio" in line and "kappa/visual" in line
  steps_per_epoch = 256 // 32
  assert lines[-1]["step"] == steps_per_epoch
  for name in ("summary.json", "config.json"):
    assert os.path.exists(os.path.join(tmp_path, name))
  assert os.listdir(os.path.join(tmp_path, "tensorboard"))
  assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["5", "8"]
  # Same command with more epochs: resumes at step 8 and continues the count.
  summary = loop.train_and_evaluate(tiny_config(method="agm", num_epochs=2), str(tmp_path))
  lines = read_lines(tmp_path)
  assert summary["steps"] == 2 * steps_per_epoch
  assert [line["step"] for line in lines if line["split"] == "test"] == [8, 16]
  assert lines[-1]["epoch"] == 1


def test_unimodal_method(tmp_path):
  c = tiny_config(method="unimodal", num_epochs=1)
  c.unimodal.modality = "visual"
  summary = loop.train_and_evaluate(c, str(tmp_path))
  assert "acc/visual" in summary["final"] and "acc/audio" not in summary["final"]


@pytest.mark.parametrize("override,message", [
    ("method=agm2", "unknown method 'agm2'; valid: joint, agm"),
    ("model.fusion=late", "unknown fusion 'late'; valid: "),
    ("agm.start_epoch=5", "agm.start_epoch (5) must be <= end_epoch (2)"),
    ("subsets.bn=train", "subsets.bn 'train' is unknown; valid: eval, batch"),
])
def test_validation_messages(override, message):
  key, value = override.split("=")
  c = tiny_config()
  target = c
  *path, last = key.split(".")
  for p in path:
    target = target[p]
  target[last] = type(target[last])(value) if not isinstance(target[last], str) else value
  if key == "agm.start_epoch":
    c.agm.end_epoch = 2
  with pytest.raises(validate.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate.validate_config(c)


def test_transform_argument_errors_name_the_config_key():
  """The transform validates its arguments once; building the run (before any compile)
  reports them under the config key."""
  with pytest.raises(ValueError, match="agm.alpha must be >= 0"):
    loop.Run(tiny_config(**{"agm.alpha": -1.0}))
  with pytest.raises(ValueError, match="ogm.alpha must be >= 0"):
    loop.Run(tiny_config(method="ogm", **{"ogm.alpha": -1.0}))


@pytest.mark.parametrize("args,message", [
    (["--config.method=foo"], "error: unknown method 'foo'; valid: joint, agm, unimodal"),
    (["--config.data.modalities=audio,text"], "error: modality 'text' is not in the data"),
    (["--config.no_such_key=1"], "no_such_key"),
])
def test_launch_bad_input_is_one_line(tmp_path, args, message):
  """launch.py's parsing and main in-process (no new interpreter and import per case)."""
  out = launch_in_process(tmp_path, *args)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr


def test_launch_script_bad_input_is_one_line(tmp_path):
  """The one real ``python launch.py`` run: app.run, the flags parser and the exit code."""
  out = subprocess.run(launch_cmd(tmp_path, "--config.method=foo"), capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: unknown method 'foo'; valid: ")
  assert "Traceback" not in out.stderr


def test_optimizer_state_gets_its_own_buffers():
  """A transform whose init puts one array in two fields must still train with the donated
  state (the jitted step donates every buffer once)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from agm_jax.train import state  # noqa: PLC0415
  z = jnp.zeros((2,))
  a, b, n = state.distinct_buffers((z, z, 3))
  assert n == 3 and a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
  step = jax.jit(lambda t: jax.tree.map(lambda x: x + 1, t), donate_argnums=0)
  out = step((a, b))
  assert float(out[0][0]) == 1.0 and float(out[1][1]) == 1.0


# (where, argv) of every "python launch.py …" command in README.md, docs/ and the configs
DOC_COMMANDS = [(w, argv) for w, _, argv in documented_commands(r"launch\.py")]


def test_the_docs_have_launch_commands():
  where = [w for w, _ in DOC_COMMANDS]
  assert len(where) >= 30
  assert {w.split(":")[0].split("/")[0] for w in where} >= {"README.md", "docs", "configs"}


@pytest.mark.parametrize("argv", [a for _, a in DOC_COMMANDS], ids=[w for w, _ in DOC_COMMANDS])
def test_every_documented_launch_command_parses(tmp_path, argv):
  """Each command the README and docs show: its flags and config overrides parse and the
  config validates (nothing trains)."""
  config = [a for a in argv if a.startswith("--config=")]
  assert len(config) == 1 and config[0].startswith("--config=configs/"), argv
  rest = [a for a in argv if not a.startswith(("--config=", "--workdir="))]
  out = launch_in_process(str(tmp_path), *rest, config=config[0][len("--config=configs/"):],
                          run=False)
  assert out.returncode == 0, out.stderr
