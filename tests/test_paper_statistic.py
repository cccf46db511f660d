"""The statistic a paper reports (config.paper_statistic: the highest accuracy over epochs on
one split), logged as a running maximum on that split's lines and in summary.json, exact
across a resume, and shown by the report beside the paper's numbers."""

import json

import pytest

from agm_jax.tools import report
from agm_jax.train import loop
from configs import paper
from tests.conftest import read_lines, tiny_config


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
  """Three epochs of joint training run as one epoch, then resumed to three."""
  work = tmp_path_factory.mktemp("paper_stat")
  for epochs in (1, 3):
    loop.train_and_evaluate(tiny_config(method="joint", num_epochs=epochs,
                                        paper_statistic="max_val_acc"), str(work))
  return work


def test_running_maximum_on_the_lines(resumed):
  vals = [x for x in read_lines(resumed) if x["split"] == "val"]
  assert [x["epoch"] for x in vals] == [0, 1, 2]
  for i, line in enumerate(vals):   # epoch 0 came from the first run, 1-2 after the resume
    assert line["paper_max_val_acc"] == max(v["acc"] for v in vals[:i + 1])
  assert all("paper_max_val_acc" not in x for x in read_lines(resumed) if x["split"] != "val")
  with open(resumed / "summary.json") as f:
    summary = json.load(f)
  best = max(vals, key=lambda v: (v["acc"], -v["epoch"]))
  assert summary["paper"] == {"name": "paper_max_val_acc", "value": best["acc"],
                              "epoch": best["epoch"], "split": "val"}


def test_report_compares_the_paper_with_its_statistic(resumed):
  run = report.load_run(str(resumed))
  ref = [{"source": "agm_table3", "dataset": "synthetic", "fusion": "concat",
          "method": "joint", "acc": "61.14", "acc_a": "57.10"}]
  text = report.dataset_section("synthetic", [run], ref)
  header = next(line for line in text.splitlines() if line.startswith("| Method"))
  assert header.endswith("| Max val Acc |")
  reported = next(line for line in text.splitlines() if "↳ reported" in line).split(" | ")
  assert reported[3] == "–" and reported[-1].strip(" |") == "61.14"
  assert "the highest validation accuracy over all epochs" in text


def test_paper_configs_name_the_released_statistic():
  assert paper.PAPER_STATISTIC["cremad"] == "max_test_acc"
  assert paper.PAPER_STATISTIC["ave"] == "max_val_acc"
  with pytest.raises(ValueError, match="unknown paper_statistic 'best'; valid: ''"):
    loop.paper_statistic(tiny_config(paper_statistic="best"))


def test_last_partial_batch_kept(tmp_path):
  """drop_last=False (the released loaders): 256 examples at batch 48 are 5 full batches and
  one of 16, every epoch; the step count and lines follow."""
  c = tiny_config(method="agm", num_epochs=2, batch_size=48, drop_last=False,
                  checkpoint_every_steps=0, log_every_steps=100)
  summary = loop.train_and_evaluate(c, str(tmp_path))
  assert summary["steps"] == 12
  assert [x["step"] for x in read_lines(tmp_path) if x["split"] == "train"] == [6, 12]
  assert paper.released_rules(tiny_config(), early=False).drop_last is False
