"""The complete evaluation: macro-F1 and mAP against scikit-learn (absent classes, ties, padded
and per-position rows), the subset accuracies against the model run with modalities zeroed by
hand, BalanceBenchmark's Shapley accuracy, train-step FLOPs, best-on-validation selection, and
the report's F1/mAP columns, missing-modality table and t-SNE figure."""

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score
from threadpoolctl import threadpool_limits

from agm_jax import metrics, shapley
from agm_jax.tools import report
from agm_jax.train import loop
from agm_jax.train.steps import step_flops
from tests.conftest import tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sk_map(labels, scores, k, columns=None):
  one_hot = np.eye(k)[labels]
  cols = slice(None) if columns is None else columns
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # "No positive class found in y_true"
    return average_precision_score(one_hot[:, cols], scores[:, cols], average="macro")


@pytest.mark.parametrize("seed", range(4))
def test_f1_and_map_match_sklearn_with_ties_and_absent_classes(seed):
  rng = np.random.default_rng(seed)
  k, n = 5, 40
  labels = rng.integers(0, k - 1, n)                        # class k-1 absent from the split
  scores = rng.integers(0, 3, (n, k)).astype(np.float32)    # many ties, within and across rows
  present = np.unique(labels)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    f1 = f1_score(labels, scores.argmax(-1), average="macro")
    f1_all = f1_score(labels, scores.argmax(-1), average="macro", labels=range(k))
  assert metrics.macro_f1(scores, labels) == pytest.approx(f1, abs=1e-6)
  assert metrics.macro_f1(scores, labels, num_classes=k) == pytest.approx(f1_all, abs=1e-6)
  assert metrics.mean_average_precision(scores, labels) == pytest.approx(
      sk_map(labels, scores, k, present), abs=1e-6)
  assert metrics.mean_average_precision(scores, labels, absent="zero") == pytest.approx(
      sk_map(labels, scores, k), abs=1e-6)


def test_hand_computed_cases():
  # Scores 0.9, 0.5 (tie), 0.5, 0.1 with positives at ranks 1 and 3: the tie is one
  # threshold, so AP = 1/2 * 1 + 1/2 * 2/3.
  assert metrics.average_precision([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
  assert np.isnan(metrics.average_precision([0.3, 0.2], [0, 0]))
  # Predictions 0, 0, 1 for labels 0, 1, 1: F1 = 2/3 for both classes; class 2 (never
  # present, never predicted) is left out, or counts 0 over all classes.
  logits = np.array([[2, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
  assert metrics.macro_f1(logits, [0, 1, 1]) == pytest.approx(2 / 3)
  assert metrics.macro_f1(logits, [0, 1, 1], num_classes=3) == pytest.approx(4 / 9)
  with pytest.raises(ValueError, match="absent 'drop' is unknown; valid: skip, zero"):
    metrics.mean_average_precision(logits, [0, 1, 1], absent="drop")
  with pytest.raises(ValueError, match="need labels of shape"):
    metrics.macro_f1(logits, [0, 1])


def test_weight_drops_padding_and_positions_flatten():
  rng = np.random.default_rng(0)
  logits, labels = rng.normal(size=(4, 3, 5)), rng.integers(0, 5, (4, 3))   # (B, T, K)
  flat = metrics.classification(logits.reshape(12, 5), labels.reshape(12))
  assert metrics.classification(logits, labels) == flat
  # A padded final batch: the repeated rows weigh 0 and change nothing.
  padded = np.concatenate([logits.reshape(12, 5), np.repeat(logits[:1, 0], 4, 0)])
  weight = np.arange(16) < 12
  assert metrics.classification(padded, np.r_[labels.reshape(12), [0] * 4],
                                weight=weight) == flat


def test_shapley_accuracy_hand_computed():
  # k = 2, v(∅)=.1, v(a)=.5, v(v)=.4, v(av)=.8: phi_a = (.8-.4)/2 + (.5-.1)/2.
  np.testing.assert_allclose(metrics.shapley_accuracy([0.1, 0.5, 0.4, 0.8]), [0.4, 0.3])
  out = metrics.subset_metrics([0.1, 0.5, 0.4, 0.8], ("audio", "visual"))
  assert out["subset_acc/audio+visual"] == 0.8 and out["subset_acc/visual"] == 0.4
  assert out["imbalance_gap"] == pytest.approx(0.1)
  # k = 3: efficiency, sum_m phi^m = v(M) - v(∅); a modality that never changes v gets 0.
  v = np.array([0.2, 0.6, 0.2, 0.6, 0.3, 0.7, 0.3, 0.7])    # bit 1 (visual) is a dummy
  phi = metrics.shapley_accuracy(v)
  assert phi.sum() == pytest.approx(v[-1] - v[0]) and phi[1] == pytest.approx(0)
  assert metrics.subset_names(("a", "v", "t"))[1:] == ["a", "v", "a+v", "t", "a+t", "v+t",
                                                       "a+v+t"]
  np.testing.assert_array_equal(metrics.subset_masks(3), shapley.subset_masks(3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One epoch of AGM on the tiny task, test split evaluated in padded batches (64 = 48 + 16)."""
  workdir = tmp_path_factory.mktemp("agm")
  c = tiny_config(method="agm", num_epochs=1, eval_batch_size=48)
  run, state, summary = loop.fit(c, str(workdir))
  return workdir, run, state, summary


def test_subset_accuracy_equals_zeroed_inputs(trained):
  _, run, state, _ = trained
  result, _, logits = run.evaluate(state, "test")
  data = run.dataset.arrays["test"]
  inputs = {m: jnp.asarray(data[m]) for m in run.modalities}
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  for name, mask in zip(metrics.subset_names(run.modalities)[1:], [(1, 0), (0, 1), (1, 1)]):
    x = {m: v if on else jnp.zeros_like(v) for (m, v), on in zip(inputs.items(), mask)}
    out, _ = run.model.apply(variables, x, False)
    expected = float(np.mean(np.argmax(out, -1) == data["label"]))
    assert result[f"subset_acc/{name}"] == pytest.approx(expected, abs=1e-6), name
  assert result["subset_acc/audio+visual"] == pytest.approx(result["acc"], abs=1e-6)
  assert result["f1"] == pytest.approx(
      f1_score(data["label"], logits.argmax(-1), average="macro"), abs=1e-6)
  probs = metrics.softmax(logits)
  assert result["mAP"] == pytest.approx(
      sk_map(data["label"], probs, probs.shape[-1], np.unique(data["label"])), abs=1e-6)
  assert result["imbalance_gap"] == pytest.approx(
      abs(result["shapley_acc/audio"] - result["shapley_acc/visual"]))


def test_run_writes_new_metrics_summary_and_features(trained):
  workdir, _, _, summary = trained
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  for line in (line for line in lines if line["split"] in ("val", "test")):
    for key in ("f1", "mAP", "subset_acc/audio", "subset_acc/visual", "subset_acc/audio+visual",
                "shapley_acc/audio", "shapley_acc/visual", "imbalance_gap"):
      assert key in line, key
    assert "subset_acc/" not in line
  assert summary["train_step_flops"] > 0
  assert summary["best_val"]["epoch"] == 0
  assert summary["best_val"]["test"]["acc"] == summary["final"]["acc"] == lines[-1]["acc"]
  assert summary["final_val"]["acc"] == lines[-2]["acc"]
  with np.load(os.path.join(workdir, loop.FEATURES_FILE)) as f:
    assert f["z"].shape == (64, 32) and f["labels"].shape == (64,)   # concat of two 16s


def test_agm_step_costs_more_flops_than_joint():
  flops = {}
  for method in ("joint", "agm"):
    run = loop.Run(tiny_config(method=method))
    state = run.dp.put_state(run.init_state())
    batch = next(run.train_batches(0))
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                          batch)
    flops[method] = step_flops(run.train_step, state, shapes, np.bool_(True))
  assert 0 < flops["joint"] < flops["agm"]


def test_best_on_validation_picked_from_metrics_file(tmp_path):
  """Val acc peaks at epoch 1 (the first of two equal maxima); test acc peaks at epoch 2 and
  must not be selected."""
  val, test = [0.5, 0.8, 0.8, 0.6], [0.4, 0.6, 0.9, 0.7]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for e, (v, t) in enumerate(zip(val, test)):
      f.write(json.dumps({"step": e, "epoch": e, "split": "val", "acc": v}) + "\n")
      f.write(json.dumps({"step": e, "epoch": e, "split": "test", "acc": t, "f1": t / 2}) + "\n")
  s = loop.summarize(str(tmp_path), [], 1.0, 4)
  assert s["best_val"] == {"epoch": 1, "val": {"step": 1, "epoch": 1, "acc": 0.8},
                           "test": {"step": 1, "epoch": 1, "acc": 0.6, "f1": 0.3}}
  assert s["best_epoch"] == 1 and s["best"]["acc"] == 0.6
  assert s["final"]["acc"] == 0.7 and s["final_val"]["acc"] == 0.6


def make_workdir(root, method, seed, *, acc, subset, f1, feats=True):
  path = root / f"{method}_s{seed}"
  path.mkdir()
  (path / "config.json").write_text(json.dumps(
      {"method": method, "seed": seed, "data": {"name": "synthetic", "modalities": "audio,visual"},
       "model": {"fusion": "concat"}}))
  test = {"step": 8, "epoch": 0, "split": "test", "acc": acc, "f1": f1, "mAP": f1 + 0.1,
          "subset_acc/audio": subset[0], "subset_acc/visual": subset[1],
          "subset_acc/audio+visual": acc}
  (path / "metrics.jsonl").write_text(json.dumps(test) + "\n")
  (path / "summary.json").write_text(json.dumps({"final": dict(test, split=None)}))
  if feats:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 20)
    z = rng.normal(size=(60, 8)) + 4 * np.eye(8)[labels]
    np.savez(path / "features_test.npz", z=z.astype(np.float32), labels=labels)
  return str(path)


def test_report_columns_missing_modality_table_and_tsne(tmp_path, capsys):
  dirs = [make_workdir(tmp_path, "joint", s, acc=0.6, subset=(0.55, 0.3), f1=0.5) for s in (0, 1)]
  dirs.append(make_workdir(tmp_path, "agm", 0, acc=0.7, subset=(0.5, 0.45), f1=0.6))
  out = tmp_path / "report"
  assert report.main([*dirs, "--out", str(out), "--reference", "none", "--no-plots"]) == 0
  text = (out / "report.md").read_text()
  assert "| F1 | mAP |" in text
  assert "| joint | concat | 0, 1 | 60.00 ± 0.00 (2) |" in text
  assert "50.00 ± 0.00 (2) | 60.00 ± 0.00 (2) |" in text      # joint F1, mAP
  assert "Missing modalities" in text
  assert "| agm | concat | 0 | 50.00 (1) | 45.00 (1) | 70.00 (1) |" in text
  with threadpool_limits(1):   # tiny t-SNE: OpenMP threads only contend on a shared CPU
    png = report.plot_tsne("synthetic", [report.load_run(d) for d in dirs], str(out))
  assert png == str(out / "synthetic_tsne.png")
  with open(png, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  os.remove(os.path.join(dirs[-1], report.FEATURES_FILE))    # a run without features: no panel
  assert report.read_features(report.load_run(dirs[-1])) is None
