"""The report tool on fabricated workdirs: grouped mean ± std table, reported numbers, plots,
tolerance of killed / partial runs, and one-line errors for bad paths."""

import json
import os

import pytest

from agm_jax.tools import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODS = ("audio", "visual")


def make_run(root, name, *, method, seed=0, dataset="synthetic", fusion="concat", epochs=3,
             acc=0.6, acc_m=(0.5, 0.3), d=(0.45, 0.70), competition=True, kappa=False,
             summary=True, truncate=False, concept=None, whitened=False):
  """Writes a fake workdir whose last test epoch has exactly ``acc``, ``acc_m`` and ``d``.
  ``seed=None`` leaves the seed out of the config; ``truncate`` appends a half-written line."""
  path = root / name
  path.mkdir()
  config = {"method": method, "data": {"name": dataset, "modalities": ",".join(MODS)},
            "model": {"fusion": fusion}, "competition": {"whitened": whitened}}
  if seed is not None:
    config["seed"] = seed
  (path / "config.json").write_text(json.dumps(config))
  lines, step = [], 0
  for e in range(epochs):
    ramp = 0.5 + 0.5 * (e + 1) / epochs       # reaches 1 at the last epoch
    for _ in range(2):
      step += 5
      train = {"step": step, "epoch": e, "split": "train", "loss": 1.0 / step, "acc": acc * ramp}
      if kappa:
        train.update({"kappa/audio": 1.0 - 0.1 * ramp, "kappa/visual": 1.0 + 0.2 * ramp})
      lines.append(train)
    test = {"step": step, "epoch": e, "split": "test", "loss": 1.0, "acc": acc * ramp}
    for m, a, dm in zip(MODS, acc_m, d):
      test[f"acc/{m}"] = a * ramp
      test[f"mono_ce/{m}"] = 1.0
      if competition:
        test[f"competition/{m}"] = dm / ramp
    lines.append({"step": step, "epoch": e, "split": "val", "acc": acc})
    lines.append(test)
  text = "".join(json.dumps(l) + "\n" for l in lines)
  if truncate:
    text += f'{{"step": 999, "epoch": {epochs}, "split": "te'
  (path / "metrics.jsonl").write_text(text)
  if summary:
    s = {"final": dict(lines[-1], split=None), "best": lines[-1]}
    if concept:
      s.update({f"concept_acc/{m}": c for m, c in zip(MODS, concept)})
    (path / "summary.json").write_text(json.dumps(s))
  return str(path)


@pytest.fixture
def synthetic_runs(tmp_path):
  """joint: seeds 0, 2 and one without a seed; agm: a full run, one without competition
  values, one killed (truncated metrics.jsonl, no summary.json)."""
  runs = tmp_path / "runs"
  runs.mkdir()
  return [
      make_run(runs, "joint_s0", method="joint", seed=0, acc=0.60, acc_m=(0.50, 0.20)),
      make_run(runs, "joint_s2", method="joint", seed=2, acc=0.62, acc_m=(0.52, 0.22)),
      make_run(runs, "joint_nos", method="joint", seed=None, acc=0.64, acc_m=(0.54, 0.24)),
      make_run(runs, "agm_s0", method="agm", seed=0, acc=0.70, d=(0.40, 0.50), kappa=True),
      make_run(runs, "agm_s1", method="agm", seed=1, acc=0.74, competition=False, kappa=True),
      make_run(runs, "agm_s2", method="agm", seed=2, acc=0.72, d=(0.44, 0.60), kappa=True,
               epochs=2, truncate=True, summary=False),
  ]


def row(text, label):
  """The Markdown row whose first cell is ``label``."""
  rows = [l for l in text.splitlines() if l.startswith(f"| {label} |")]
  assert len(rows) == 1, (label, text)
  return [c.strip() for c in rows[0].strip("|").split("|")]


def test_table_means_stds_and_tolerance(synthetic_runs, tmp_path, capsys):
  out = tmp_path / "out"
  assert report.main(synthetic_runs + ["--out", str(out), "--no-plots"]) == 0
  text = (out / "report.md").read_text()
  assert text in capsys.readouterr().out
  assert "## synthetic" in text and "eq. 13" in text
  header = row(text, "Method")
  assert header == ["Method", "Fusion", "Seeds", "Acc", "Acc_a", "Acc_v", "d_a", "d_v"]
  joint = dict(zip(header, row(text, "joint")))
  # 60, 62, 64 -> mean 62, sample std 2; 20, 22, 24 -> 22 ± 2; d identical -> std 0.
  assert joint["Seeds"] == "0, 2, ?"
  assert joint["Acc"] == "62.00 ± 2.00 (3)"
  assert joint["Acc_v"] == "22.00 ± 2.00 (3)"
  assert joint["d_a"] == "0.4500 ± 0.0000 (3)"
  agm = dict(zip(header, row(text, "agm")))
  # killed seed 2 counts with its last complete test epoch: acc 70, 74, 72 -> 72 ± 2.
  assert agm["Acc"] == "72.00 ± 2.00 (3)"
  # seed 1 logged no competition: d_a from 0.40 and 0.44 -> 0.42 ± 0.028284.
  assert agm["d_a"] == "0.4200 ± 0.0283 (2)"
  assert agm["d_v"] == "0.5500 ± 0.0707 (2)"
  assert "reported" not in text                     # synthetic matches no paper row
  assert "concept" not in text
  assert "no summary.json" in text and "skipped unreadable line(s) [9]" in text
  assert "runs end at different epochs [1, 2]" in text


def test_cremad_reported_numbers_and_concept(tmp_path):
  runs = tmp_path / "runs"
  runs.mkdir()
  dirs = [make_run(runs, f"{m}_s{s}", method=m, seed=s, dataset="cremad", concept=(0.61, c))
          for m in ("joint", "agm") for s, c in ((0, 0.74), (1, 0.76))]
  out = tmp_path / "out"
  assert report.main(dirs + ["--out", str(out), "--no-plots"]) == 0
  text = (out / "report.md").read_text()
  assert "## cremad (crema-d)" in text
  concept = row(text, "concept")
  assert concept[4:6] == ["61.00 ± 0.00 (2)", "75.00 ± 1.41 (2)"]  # deduplicated per seed
  reported = [l for l in text.splitlines() if "↳ reported" in l]
  # concat matches the AGM tables' "late" rows and the concat rows of T-PAMI/BalanceBenchmark.
  assert any("agm_table3" in l and "| late |" in l and "62.63" in l and "75.93" in l
             for l in reported)                              # concept row
  assert any("agm_table3" in l and "78.48" in l and "48.58" in l and "0.6624" in l
             and "0.5067" in l for l in reported)           # agm, Table 3
  assert any("agm_table3" in l and "61.14" in l and "0.7555" in l for l in reported)  # joint
  assert any("balancebenchmark" in l and "71.59" in l for l in reported)
  assert any("tpami_table2" in l and "66.9" in l for l in reported)
  assert report.main(dirs + ["--out", str(out), "--no-plots", "--reference", "none"]) == 0
  assert "reported" not in (out / "report.md").read_text()


def test_plots_are_written(synthetic_runs, tmp_path):
  out = tmp_path / "plots"
  assert report.main(synthetic_runs + ["--out", str(out)]) == 0
  names = sorted(os.listdir(out))
  assert names == ["report.md", "synthetic_concat_joint_vs_agm.png", "synthetic_curves.png",
                   "synthetic_kappa.png"]
  for name in names[1:]:
    data = (out / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
  assert "![synthetic_curves.png](synthetic_curves.png)" in (out / "report.md").read_text()


def test_runs_without_competition_or_metrics_still_report(tmp_path):
  runs = tmp_path / "runs"
  runs.mkdir()
  dirs = [make_run(runs, "j", method="joint", competition=False, whitened=True),
          make_run(runs, "a", method="agm", competition=False)]
  empty = runs / "empty"                       # killed before its first epoch
  empty.mkdir()
  (empty / "config.json").write_text(json.dumps({"method": "agm", "seed": 1,
                                                 "data": {"name": "synthetic"}}))
  (empty / "metrics.jsonl").write_text("")
  assert report.main(dirs + [str(empty)]) == 0   # --out defaults to the common parent
  text = (runs / "report.md").read_text()
  assert "eq. 13" in text and "whitened" in text and "joint [whitened d]" in text
  assert row(text, "joint [whitened d]")[6:] == ["–", "–"]
  assert "no test metrics" in text
  assert os.path.exists(runs / "synthetic_curves.png")
  assert os.path.exists(runs / "synthetic_concat_joint_vs_agm.png")


def test_helpers():
  assert report.fmt_stat([]) == "–"
  assert report.fmt_stat([0.5]) == "50.00 (1)"
  assert report.fmt_stat([0.1, 0.2, float("nan")], 1, 4) == "0.1500 ± 0.0707 (2)"
  assert report.number("inf") == float("inf") and report.number(None) != report.number(None)
  assert report.paper_fusions("maxout") == ("maxout", "early")
  assert report.paper_dataset("kinetics_sounds") == "kinetics-sounds"
  assert report.parse_modalities(["audio", "text"]) == report.parse_modalities("audio, text")
  tests = {0: {"epoch": 0, "acc": 0.1}, 3: {"epoch": 3, "acc": 0.4}}
  assert report.final_metrics({"final": {"epoch": 3, "acc": 0.5}}, tests)[0]["acc"] == 0.5
  final, note = report.final_metrics({"final": {"epoch": 2, "acc": 0.3}}, tests)
  assert final["acc"] == 0.4 and "using the later" in note
  ref = report.load_reference("auto")
  ks = report.reported_rows(ref, "kinetics_sounds", "film", "agm")
  assert [(r["source"], r["fusion"], r["acc"]) for r in ks] == [("agm_table7", "film", "55.73")]
  x, mean, lo, hi = report.aggregate([{0: 1.0, 1: 3.0}, {0: 3.0}])
  assert list(x) == [0, 1] and list(mean) == [2.0, 3.0] and list(lo) == [1.0, 3.0]


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
  good = make_run(tmp_path, "ok", method="joint")
  not_run = tmp_path / "not_a_run"
  not_run.mkdir()
  for bad in (tmp_path / "missing", not_run):
    assert report.main([good, str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err
