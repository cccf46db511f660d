"""The linear-probe evaluation (agm_jax/tools/linear_probe.py) on tiny finished runs: one
seed and two vmapped seeds, summary.json updated, the same numbers twice, clear errors."""

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
  for split in ("train", "val", "test"):
    for m in ("audio", "visual"):
      assert 0.0 <= record[f"{split}/{m}"] <= 1.0
  with open(runs / "one" / "summary.json") as f:
    summary = json.load(f)
  assert summary["linear_probe"]["test/audio"] == record["test/audio"]
  assert "final" in summary                                   # the rest of the summary kept
  again = linear_probe.probe_workdir(str(runs / "one"))[0]
  assert again["test/visual"] == record["test/visual"]       # deterministic


def test_probe_each_seed_of_a_multi_seed_run(runs):
  records = linear_probe.probe_workdir(str(runs / "two"))
  assert [r["seed"] for r in records] == [0, 1]
  single = linear_probe.probe_workdir(str(runs / "one"))[0]
  np.testing.assert_allclose(records[0]["test/audio"], single["test/audio"])   # same seed
  for s in (0, 1):
    with open(runs / "two" / f"seed_{s}" / "summary.json") as f:
      assert "linear_probe" in json.load(f)


def test_errors_are_one_line(tmp_path, capsys):
  assert linear_probe.main(["linear_probe", str(tmp_path)]) == 2
  assert "has no config.json" in capsys.readouterr().err
