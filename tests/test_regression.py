"""A regression task (float score labels, one output unit; CMU-MOSEI sentiment as MulT / MMSA
evaluate it): the metrics against scikit-learn, numpy and hand-computed cases, the per-example
loss and correctness, the data side, and tiny end-to-end runs of joint and agm."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from agm_jax import metrics, shapley
from agm_jax.train import loop
from data_pipelines.builders import mosei_tbje
from data_pipelines.sources.base import ArrayDataset, is_regression
from tests.conftest import read_lines, tiny_config

REGRESSION_KEYS = ("acc2", "acc2_non0", "f1", "f1_non0", "acc7", "mae", "corr")


def _literature(pred, truth):
  """MMSA's ``__eval_mosei_regression`` / MulT's ``eval_mosei_senti`` rules, written out with
  scikit-learn and numpy (the reference the module is checked against)."""
  non0 = truth != 0
  return {
      "acc2": accuracy_score(truth >= 0, pred >= 0),
      "f1": f1_score(truth >= 0, pred >= 0, average="weighted"),
      "acc2_non0": accuracy_score(truth[non0] > 0, pred[non0] > 0),
      "f1_non0": f1_score(truth[non0] > 0, pred[non0] > 0, average="weighted"),
      "acc7": np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(truth, -3, 3))),
      "mae": np.mean(np.abs(pred - truth)),
      "corr": np.corrcoef(pred, truth)[0, 1],
  }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_match_sklearn_and_numpy(seed):
  rng = np.random.default_rng(seed)
  truth = np.round(rng.uniform(-3.4, 3.4, 200) * 3) / 3   # exact zeros and ±3.x occur
  truth[:5] = 0.0
  pred = rng.normal(truth * 0.5, 1.5)
  pred[:3] = 0.0                                           # ties at 0
  got = metrics.regression(pred[:, None], truth.astype(np.float32))
  want = _literature(pred, truth.astype(np.float32).astype(np.float64))
  assert set(got) == set(REGRESSION_KEYS)
  for key in REGRESSION_KEYS:
    assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_regression_metrics_by_hand():
  """Labels (0, 1, -2, 0.5, 2.5), predictions (0, -0.2, -1.6, 1.4, 3.7).
  Has-zero: truth >= 0 (T, T, F, T, T), pred >= 0 (T, F, F, T, T): acc2 4/5; weighted F1:
  class T (support 4) 2·3/(4+3) = 6/7, class F (support 1) 2·1/(1+2) = 2/3 -> (4·6/7 + 2/3)/5.
  Non-zero: label 0 dropped; truth > 0 (T, F, T, T), pred > 0 (F, F, T, T): acc2_non0 3/4;
  F1: T (support 3) 2·2/(3+2) = 4/5, F (support 1) 2·1/(1+2) = 2/3 -> (3·4/5 + 2/3)/4.
  Acc-7 (half to even; 3.7 clipped to 3): truth (0, 1, -2, 0, 2), pred (0, -0, -2, 1, 3): 2/5.
  MAE: (0 + 1.2 + 0.4 + 0.9 + 1.2)/5 = 0.74."""
  truth = np.array([0.0, 1.0, -2.0, 0.5, 2.5])
  pred = np.array([0.0, -0.2, -1.6, 1.4, 3.7])
  got = metrics.regression(pred, truth)
  assert got["acc2"] == pytest.approx(4 / 5)
  assert got["f1"] == pytest.approx((4 * 6 / 7 + 2 / 3) / 5)
  assert got["acc2_non0"] == pytest.approx(3 / 4)
  assert got["f1_non0"] == pytest.approx((3 * 4 / 5 + 2 / 3) / 4)
  assert got["acc7"] == pytest.approx(2 / 5)
  assert got["mae"] == pytest.approx(0.74)
  assert got["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])
  np.testing.assert_array_equal(metrics.seven_class([0.5, 1.5, 2.5, -0.5, -3.6]),
                                [0, 2, 2, -0, -3])


def test_regression_metrics_edge_cases():
  """Constant predictions: corr NaN (numpy would warn), the rest defined; every label 0: the
  non-zero entries NaN; the weight mask drops padding rows; an empty split is all NaN."""
  truth = np.array([-1.0, 0.0, 2.0, 1.0])
  got = metrics.regression(np.full(4, 0.3), truth)
  assert math.isnan(got["corr"])
  assert got["acc2"] == pytest.approx(3 / 4) and got["mae"] == pytest.approx(np.mean(
      np.abs(0.3 - truth)))
  zeros = metrics.regression(np.array([0.5, -0.5]), np.zeros(2))
  assert math.isnan(zeros["acc2_non0"]) and math.isnan(zeros["f1_non0"])
  assert zeros["acc2"] == pytest.approx(0.5) and math.isnan(zeros["corr"])
  masked = metrics.regression(np.array([[1.0], [-1.0], [9.0]]), np.array([1.0, -1.0, -9.0]),
                              weight=np.array([1, 1, 0]))
  assert masked["acc2"] == 1.0 and masked["mae"] == 0.0 and masked["corr"] == pytest.approx(1.0)
  assert all(math.isnan(v) for v in metrics.regression(np.zeros((0, 1)), np.zeros(0)).values())
  with pytest.raises(ValueError, match="predictions of shape"):
    metrics.regression(np.zeros((4, 2)), truth)
  f1 = metrics.weighted_f1(np.array([1, 1, 0]), np.array([1, 2, 2]))   # a class only predicted
  assert f1 == pytest.approx(f1_score([1, 1, 0], [1, 2, 2], average="weighted",
                                      zero_division=0))


def test_whole_split_picks_the_task_from_the_labels():
  logits = np.array([[0.2, 0.1], [0.0, 1.0]])
  assert metrics.whole_split(logits, np.array([0, 1])) == metrics.classification(
      logits, np.array([0, 1]))
  assert set(metrics.whole_split(logits[:, :1], np.array([0.5, -1.0]))) == set(REGRESSION_KEYS)


def test_example_loss_and_correct():
  """Score labels: L1 of the one output and the has-zero Acc-2 decision; mono_ce is each
  modality's mean L1 of phi^m; integer labels keep the cross-entropy; float labels with more
  than one output unit are an error (no silent argmax)."""
  out = jnp.array([[0.5], [-1.0], [0.0]])
  y = jnp.array([1.5, 0.0, -0.5], jnp.float32)
  np.testing.assert_allclose(shapley.example_loss(out, y), [1.0, 1.0, 0.5])
  np.testing.assert_array_equal(shapley.example_correct(out, y), [True, False, False])
  phi = jnp.stack([out, 2 * out])                           # (k=2, B, 1)
  np.testing.assert_allclose(shapley.mono_modal_ce(phi, y), [2.5 / 3, (0.5 + 2 + 0.5) / 3])
  np.testing.assert_allclose(shapley.mono_modal_accuracy(phi, y), [1 / 3, 1 / 3])
  logits, labels = jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0])
  np.testing.assert_array_equal(shapley.example_loss(logits, labels),
                                shapley.cross_entropy(logits, labels))
  with pytest.raises(ValueError, match="1 output unit"):
    shapley.example_loss(logits, labels.astype(jnp.float32))
  with pytest.raises(ValueError, match="integer class labels"):
    shapley.cross_entropy(logits, labels.astype(jnp.float32))


def _split(n, seed):
  """Two modalities; the score is a sum of both, clipped to [-3, 3] and rounded to 1/3."""
  rng = np.random.default_rng(seed)
  audio = rng.standard_normal((n, 8)).astype(np.float32)
  visual = rng.standard_normal((n, 8)).astype(np.float32)
  score = np.clip(1.5 * audio[:, 0] + visual[:, 0], -3, 3)
  return {"audio": audio, "visual": visual,
          "label": (np.round(score * 3) / 3).astype(np.float32)}


@pytest.fixture(scope="module")
def scores():
  return ArrayDataset("scores", ("audio", "visual"), 1,
                      {"train": _split(128, 0), "dep": _split(40, 1), "test": _split(40, 2)})


def test_array_dataset_labels_follow_num_classes(scores):
  assert is_regression(scores)
  with pytest.raises(ValueError, match="num_classes=1"):
    ArrayDataset("bad", ("audio",), 2, {"train": {"audio": np.zeros((2, 1)),
                                                 "label": np.zeros(2, np.float32)}})
  with pytest.raises(ValueError, match="num_classes=1"):
    ArrayDataset("bad", ("audio",), 1, {"train": {"audio": np.zeros((2, 1)),
                                                 "label": np.zeros(2, np.int32)}})


def _config(method):
  c = tiny_config(**{"method": method, "model.fusion": "sum", "num_epochs": 2,
                     "batch_size": 32, "eval_batch_size": 32})
  c.optimizer.name, c.optimizer.learning_rate = "adam", 1e-2
  return c


@pytest.mark.parametrize("method", ["joint", "agm"])
def test_regression_trains_end_to_end(method, scores, tmp_path):
  """A one-unit late-fusion MLP learns the scores: L1 loss, train ``acc`` = Acc-2, the
  literature's metrics on every val/test line (test ``mae`` = the eval loss = the mean L1 of the
  model's outputs, computed here), and AGM's κ from the mono-modal L1."""
  run, state, _ = loop.fit(_config(method), str(tmp_path), dataset=scores)
  assert run.model.apply({"params": state.params}, {
      k: v[:2] for k, v in scores.arrays["test"].items() if k != "label"}, False)[0].shape == (2, 1)
  lines = read_lines(tmp_path)
  train = [line for line in lines if line.get("split") == "train"]
  assert all(np.isfinite(line["loss"]) and 0 <= line["acc"] <= 1 for line in train)
  assert train[-1]["loss"] < train[0]["loss"]
  if method == "agm":
    assert all(np.isfinite(line["kappa/audio"]) for line in train)
  for split in ("val", "test"):
    last = [line for line in lines if line.get("split") == split][-1]
    assert set(REGRESSION_KEYS) <= set(last) and "mAP" not in last
    assert last["acc"] == pytest.approx(last["acc2"], abs=1e-6)
    assert last["loss"] == pytest.approx(last["mae"], abs=1e-5)
  x = {k: v for k, v in scores.arrays["test"].items() if k != "label"}
  pred = np.asarray(run.model.apply({"params": state.params}, x, False)[0])
  expected = metrics.regression(pred, scores.arrays["test"]["label"])
  assert last["mae"] == pytest.approx(expected["mae"], abs=1e-5)
  assert last["corr"] == pytest.approx(expected["corr"], abs=1e-5)
  assert last["corr"] > 0.3


def test_other_methods_refuse_regression(scores):
  with pytest.raises(ValueError, match="joint, agm, agm_1, agm_ge, unimodal"):
    loop.Run(_config("ogm_ge"), dataset=scores)


def test_mosei_tbje_regression_labels():
  """``data.task="regression"``: the stored score itself as a float32 label, one output unit;
  the synthetic variant draws float scores too."""
  config = {"task": "regression"}
  assert mosei_tbje.DEFINITION.num_classes(config) == 1
  record = {"text": np.ones(60), "text_lengths": 3, "audio": np.zeros((60, 80)),
            "audio_lengths": 60, "sentiment": np.float32(-0.6666667)}
  out = mosei_tbje.make_preprocess(config, ("text", "audio"))(record, train=False)
  assert out["label"].dtype == np.float32 and out["label"] == np.float32(-0.6666667)
  assert mosei_tbje.make_preprocess({}, ("text", "audio"))(record, train=False)["label"] == 0
  finish = mosei_tbje.DEFINITION.synthetic_finish(config)
  example = {"text": np.zeros(60, np.int32), "text_lengths": np.int32(4), "label": np.int32(0)}
  label = finish(example, np.random.default_rng(0))["label"]
  assert label.dtype == np.float32 and -3 <= label <= 3
