"""The linear-probe evaluation (agm_jax/tools/linear_probe.py) on tiny finished runs.

Plan: one tiny joint run (1 epoch) and one with num_seeds=2, trained once per module;
* each modality's probe accuracy in [0, 1] on train/val/test, summary.json's ``linear_probe``
  written (settings included, the rest of the summary kept), the JSON line printed, a second
  call the same numbers (seeded);
* a multi-seed workdir probed per seed (seed_<s>/summary.json each), seed 0 as the 1-seed run;
* ``train_head`` alone: separable blobs are fitted exactly; settings change the record;
* one-line errors: no workdir, no config.json, no checkpoint, input_early (not separable),
  bad settings.
"""

import json

import numpy as np
import pytest

from agm_jax.tools import linear_probe
from agm_jax.train import loop
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("probe")
  loop.train_and_evaluate(tiny_config(method="joint", num_epochs=1), str(root / "one"))
  loop.train_and_evaluate(tiny_config(method="joint", num_epochs=1, num_seeds=2),
                          str(root / "two"))
  return root


def test_probe_writes_each_modality_accuracy(runs, capsys):
  assert linear_probe.main(["linear_probe", str(runs / "one")]) == 0
  record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for m in ("audio", "visual"):
    assert 0.0 <= record[m] <= 1.0
    assert record[m] == record[f"test/{m}"]
    for split in ("train", "val"):
      assert 0.0 <= record[f"{split}/{m}"] <= 1.0
  assert record["epochs"] == 30 and record["batch_size"] == 32
  with open(runs / "one" / "summary.json") as f:
    summary = json.load(f)
  assert summary["linear_probe"]["audio"] == record["audio"]
  assert summary["linear_probe"]["learning_rate"] == 1e-3
  assert "final" in summary                                   # the rest of the summary kept
  again = linear_probe.probe_workdir(str(runs / "one"))[0]
  assert {k: again[k] for k in record} == record              # deterministic


def test_probe_each_seed_of_a_multi_seed_run(runs):
  records = linear_probe.probe_workdir(str(runs / "two"))
  assert [r["seed"] for r in records] == [0, 1]
  single = linear_probe.probe_workdir(str(runs / "one"))[0]
  np.testing.assert_allclose(records[0]["audio"], single["audio"])   # seed 0 = the 1-seed run
  for s, record in zip((0, 1), records):
    with open(runs / "two" / f"seed_{s}" / "summary.json") as f:
      assert json.load(f)["linear_probe"]["visual"] == record["visual"]


def test_settings_reach_the_record(runs):
  settings = linear_probe.Settings(epochs=2, batch_size=64, learning_rate=0.01)
  record = linear_probe.probe_workdir(str(runs / "one"), settings)[0]
  assert (record["epochs"], record["batch_size"], record["learning_rate"]) == (2, 64, 0.01)
  assert 0.0 <= record["visual"] <= 1.0


def test_train_head_fits_separable_blobs():
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), 40)
  x = (np.eye(3, 5)[y] * 4 + 0.3 * rng.standard_normal((120, 5))).astype(np.float32)
  params = linear_probe.train_head(x, y, 0, num_classes=3,
                                   settings=linear_probe.Settings(learning_rate=0.05))
  assert params["params"]["kernel"].shape == (5, 3)
  assert linear_probe.accuracy(params, x, y) == 1.0


def _config_only(path, **overrides):
  path.mkdir()
  (path / "config.json").write_text(tiny_config(method="joint", **overrides).to_json())
  return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing", "is not a directory"),
    ("empty", "has no config.json"),
    ("untrained", "has no checkpoint to probe"),
    ("input_early", "needs per-modality encoders"),
    ("epochs", "--epochs must be >= 1"),
])
def test_errors_are_one_line(tmp_path, capsys, case, message):
  settings = linear_probe.Settings()
  if case == "missing":
    workdir = str(tmp_path / "nowhere")
  elif case == "empty":
    workdir = str(tmp_path)
  elif case == "input_early":
    workdir = _config_only(tmp_path / "w", **{"model.fusion": "input_early"})
  else:
    workdir = _config_only(tmp_path / "w")
    settings = linear_probe.Settings(epochs=0) if case == "epochs" else settings
  assert linear_probe.main(["linear_probe", workdir], settings) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "\n" not in err
