"""Whole-split evaluation metrics beyond accuracy (core; numpy on the host, no JAX).

* :func:`macro_f1`: macro-averaged F1 of the argmax predictions (BalanceBenchmark's F1,
  ``balancemm/evaluation/precisions.py``), equal to scikit-learn's
  ``f1_score(labels, argmax, average="macro")``.
* :func:`mean_average_precision`: macro average precision of the class scores, one-vs-rest
  (the T-PAMI 2024 paper's mAP), equal to scikit-learn's
  ``average_precision_score(one_hot(labels), scores, average="macro")`` (see ``absent``).
* :func:`shapley_accuracy` and :func:`imbalance_gap`: BalanceBenchmark's imbalance score, the
  Shapley value of each modality in the *accuracy* game (``balancemm/evaluation/modalitys.py``,
  ``Calculate_Shapley``), and the gap between the strongest and weakest modality.
* :func:`subset_names`: ``"audio"``, ``"visual"``, ``"audio+visual"``… for the bit-mask subsets
  of ``agm_jax.shapley.subset_masks`` (bit ``i`` set: modality ``i`` present).
* :func:`regression`: a sentiment-score regression task's metrics as the CMU-MOSEI literature
  reports them (MulT, Tsai et al. ACL 2019, ``src/eval_metrics.py`` ``eval_mosei_senti``;
  MMSA, ``metricsTop.py`` ``__eval_mosei_regression``): Acc-2 with and without the neutral
  (score 0) examples, the weighted F1 of those binary decisions, Acc-7, MAE and Pearson's r.

Pure numpy (the report tool, which does not import JAX, reads these too).

Every metric takes logits or scores of shape ``(..., K)`` and integer labels of shape ``(...)``
and flattens the leading axes, so per-position labels (``(B, T)``, e.g. segment-level AVE)
work as they are; ``weight`` (shape ``(...)``) masks rows out where it is 0 (padding). The
regression metrics take predictions of shape ``(..., 1)`` (the one output unit) or ``(...)`` and
float labels of shape ``(...)``.

Classes absent from the split:

* F1 follows scikit-learn's default (no ``labels=`` argument): the classes averaged over are
  those present in the labels *or* the predictions. A class never present and never predicted
  is left out; a class predicted but absent from the labels counts with F1 = 0 (scikit-learn
  warns; here it is silent). BalanceBenchmark instead averages over all K classes (absent ones
  count 0): ``macro_f1(..., num_classes=K)`` gives that (scikit-learn's ``labels=range(K)``).
* Average precision of a class without positives is undefined. ``absent="skip"`` (default,
  what the trainer logs) averages over the classes present in the labels: scikit-learn's
  score on those columns only. ``absent="zero"`` counts such a class as 0, which is what
  scikit-learn's plain call returns (with a "No positive class found" warning).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

ABSENT = ("skip", "zero")


def flatten(scores, labels, weight=None) -> tuple[np.ndarray, np.ndarray]:
  """``(scores (N, K) float64, labels (N,) int64)`` with the leading axes flattened and the rows
  of zero ``weight`` dropped. A ValueError if the shapes disagree."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
  if scores.ndim < 1 or scores.shape[:-1] != labels.shape:
    raise ValueError(f"scores of shape (..., K) need labels of shape (...); got "
                     f"{scores.shape} and {labels.shape}")
  scores, labels = scores.reshape(-1, scores.shape[-1]), labels.reshape(-1).astype(np.int64)
  if weight is not None:
    weight = np.asarray(weight)
    if weight.shape != labels.shape and weight.size != labels.size:
      raise ValueError(f"weight of shape {weight.shape} does not match labels {labels.shape}")
    keep = weight.reshape(-1) != 0
    scores, labels = scores[keep], labels[keep]
  if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[-1]):
    raise ValueError(f"labels must be in [0, {scores.shape[-1]}); got {labels.min()} … "
                     f"{labels.max()}")
  return scores, labels


def macro_f1(logits, labels, *, weight=None, num_classes: int | None = None) -> float:
  """Macro-averaged F1 of ``argmax(logits)`` (first index on ties, as ``jnp.argmax``).

  Per class ``F1 = 2 tp / (2 tp + fp + fn)`` (0 when that is 0/0), averaged over the classes
  present in the labels or the predictions (scikit-learn's ``f1_score(average="macro")``), or
  over all ``num_classes`` classes when given (``labels=range(K)``, BalanceBenchmark). NaN for
  an empty split."""
  logits, labels = flatten(logits, labels, weight)
  if labels.size == 0:
    return math.nan
  k = logits.shape[-1]
  pred = np.argmax(logits, -1)
  tp = np.bincount(labels[pred == labels], minlength=k).astype(np.float64)
  true = np.bincount(labels, minlength=k)
  predicted = np.bincount(pred, minlength=k)
  denom = true + predicted   # 2 tp + fp + fn
  f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
  if num_classes is not None:
    if num_classes != k:
      raise ValueError(f"num_classes {num_classes} differs from the logits' {k} classes")
    return float(f1.mean())
  return float(f1[denom > 0].mean())


def average_precision(scores, positive) -> float:
  """Average precision of one class: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score
  thresholds in decreasing order (tied scores form one threshold), as scikit-learn's
  ``average_precision_score``; NaN without positives."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  n_pos = positive.sum()
  if n_pos == 0:
    return math.nan
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], positive[order]
  last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]   # the last row of each tie group
  tps = np.cumsum(y)[last].astype(np.float64)
  precision = tps / (last + 1)
  recall = tps / n_pos
  return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(scores, labels, *, weight=None, absent: str = "skip") -> float:
  """Macro average precision of the class ``scores`` (``(..., K)``; e.g. softmax
  probabilities), one-vs-rest against one-hot ``labels``. ``absent``: "skip" (average over
  classes present in the labels) or "zero" (such a class counts 0, scikit-learn's plain
  ``average_precision_score(one_hot, scores, average="macro")``). NaN for an empty split."""
  if absent not in ABSENT:
    raise ValueError(f"absent {absent!r} is unknown; valid: {', '.join(ABSENT)}")
  scores, labels = flatten(scores, labels, weight)
  if labels.size == 0:
    return math.nan
  aps = np.array([average_precision(scores[:, c], labels == c)
                  for c in range(scores.shape[-1])])
  if absent == "zero":
    return float(np.nan_to_num(aps, nan=0.0).mean())
  return float(np.nanmean(aps))


def softmax(logits) -> np.ndarray:
  """Row-wise softmax in float64 (the class scores of :func:`mean_average_precision`)."""
  x = np.asarray(logits, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def classification(logits, labels, *, weight=None) -> dict[str, float]:
  """The trainer's whole-split scalars: ``f1`` (macro-F1) and ``mAP`` (macro average
  precision of the softmax scores, absent classes skipped)."""
  return {"f1": macro_f1(logits, labels, weight=weight),
          "mAP": mean_average_precision(softmax(logits), labels, weight=weight)}


def is_score(labels) -> bool:
  """Whether ``labels`` are real-valued scores (float: a regression task) rather than class
  indices (the same rule as ``agm_jax.shapley.task_of`` in the jitted steps)."""
  return bool(np.issubdtype(np.asarray(labels).dtype, np.floating))


def flatten_scores(predictions, labels, weight=None) -> tuple[np.ndarray, np.ndarray]:
  """``(predictions (N,), labels (N,))`` float64 with the leading axes flattened and the rows of
  zero ``weight`` dropped; ``predictions`` of shape ``(..., 1)`` or the labels' shape."""
  pred, labels = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
  if pred.shape == (*labels.shape, 1):
    pred = pred[..., 0]
  if pred.shape != labels.shape:
    raise ValueError(f"predictions of shape (..., 1) or (...) need labels of shape (...); got "
                     f"{pred.shape} and {labels.shape}")
  pred, labels = pred.reshape(-1), labels.reshape(-1)
  if weight is not None:
    keep = np.asarray(weight).reshape(-1) != 0
    if keep.size != labels.size:
      raise ValueError(f"weight of {keep.size} entries does not match {labels.size} labels")
    pred, labels = pred[keep], labels[keep]
  return pred, labels


def weighted_f1(truth, predicted) -> float:
  """F1 of each class present in ``truth`` or ``predicted`` (``2 tp / (2 tp + fp + fn)``),
  averaged with the class's support in ``truth`` as weight: scikit-learn's
  ``f1_score(truth, predicted, average="weighted")``. NaN when empty."""
  truth, predicted = np.asarray(truth).reshape(-1), np.asarray(predicted).reshape(-1)
  if truth.size == 0:
    return math.nan
  total = 0.0
  for c in np.union1d(truth, predicted):
    tp = np.sum((truth == c) & (predicted == c))
    denom = np.sum(truth == c) + np.sum(predicted == c)
    total += np.sum(truth == c) * (2.0 * tp / denom)
  return float(total / truth.size)


def binary_decisions(predictions, labels, *, exclude_zero: bool) -> tuple[np.ndarray, np.ndarray]:
  """The Acc-2 decisions ``(truth, predicted)`` of flat scores. Has-zero (``exclude_zero=False``):
  ``label >= 0`` vs ``pred >= 0`` (negative vs non-negative, MMSA's ``Has0``; a score of 0 is
  positive, as the released AGM code's binary labels). Non-zero: the examples labelled exactly 0
  dropped, ``label > 0`` vs ``pred > 0`` (MulT's ``exclude_zero``, MMSA's ``Non0``)."""
  if exclude_zero:
    keep = labels != 0
    return labels[keep] > 0, predictions[keep] > 0
  return labels >= 0, predictions >= 0


def seven_class(scores) -> np.ndarray:
  """Acc-7's classes of scores: ``round(clip(x, -3, 3))`` with numpy's round-half-to-even (as
  ``np.round`` in MulT's and MMSA's ``multiclass_acc``: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2)."""
  return np.round(np.clip(scores, -3.0, 3.0))


def pearson(x, y) -> float:
  """Pearson's r of two flat arrays (``np.corrcoef(x, y)[0, 1]``). NaN, without numpy's
  warning, when it is undefined: fewer than two rows or either array constant (e.g. a model
  that predicts the same score for every example)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2:
    return math.nan
  dx, dy = x - x.mean(), y - y.mean()
  denom = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
  return float(np.sum(dx * dy) / denom) if denom > 0 else math.nan


def regression(predictions, labels, *, weight=None) -> dict[str, float]:
  """A score-regression task's whole-split metrics (CMU-MOSEI sentiment in [-3, 3]):

  * ``acc2`` / ``f1``: accuracy / weighted F1 of the has-zero decisions (``>= 0``);
  * ``acc2_non0`` / ``f1_non0``: the same with the examples labelled 0 left out (``> 0``);
  * ``acc7``: accuracy of :func:`seven_class` of prediction and label;
  * ``mae``: mean absolute error; ``corr``: Pearson's r (:func:`pearson`, NaN if undefined).

  The conventions of MulT (``src/eval_metrics.py``, ``eval_mosei_senti``) and MMSA
  (``metricsTop.py``, ``__eval_mosei_regression``). Every entry is NaN on an empty split
  (``acc2_non0``/``f1_non0`` also when every label is 0)."""
  pred, labels = flatten_scores(predictions, labels, weight)
  out = {}
  for suffix, exclude in (("", False), ("_non0", True)):
    truth, decided = binary_decisions(pred, labels, exclude_zero=exclude)
    out[f"acc2{suffix}"] = float(np.mean(truth == decided)) if truth.size else math.nan
    out[f"f1{suffix}"] = weighted_f1(truth, decided)
  empty = labels.size == 0
  out["acc7"] = math.nan if empty else float(np.mean(seven_class(pred) == seven_class(labels)))
  out["mae"] = math.nan if empty else float(np.mean(np.abs(pred - labels)))
  out["corr"] = pearson(pred, labels)
  return out


def whole_split(logits, labels, *, weight=None) -> dict[str, float]:
  """:func:`regression` for score labels (:func:`is_score`), else :func:`classification`."""
  if is_score(labels):
    return regression(logits, labels, weight=weight)
  return classification(logits, labels, weight=weight)


def subset_masks(k: int) -> np.ndarray:
  """Bool ``(2**k, k)``: row ``s`` has column ``i`` set iff bit ``i`` of ``s`` is set (the order
  of ``agm_jax.shapley.subset_masks`` and of the rows of ``V``)."""
  return ((np.arange(2**k)[:, None] >> np.arange(k)[None, :]) & 1).astype(bool)


def subset_names(modalities: Sequence[str]) -> list[str]:
  """Names of the subsets ``0 … 2**k - 1``: the present modalities in the run's order joined
  by ``+`` (``""`` for the empty set)."""
  return ["+".join(m for m, on in zip(modalities, mask) if on)
          for mask in subset_masks(len(modalities))]


def shapley_accuracy(subset_acc: Sequence[float]) -> np.ndarray:
  """BalanceBenchmark's per-modality imbalance score: the Shapley value of modality ``m`` in
  the game ``v(S) = accuracy of the model with the modalities outside S padded``,

      phi^m = sum over S ⊆ M\\{m} of |S|!(k-|S|-1)!/k! * (v(S ∪ {m}) - v(S)),

  *including* the empty coalition (``v(∅)``: every modality padded), so ``sum_m phi^m =
  v(M) - v(∅)`` (Xu et al. 2025, BalanceBenchmark, ``Calculate_Shapley`` in
  ``balancemm/evaluation/modalitys.py``). Unlike AGM's phi (logits, no ``v(∅)``) this is a
  scalar per modality. ``subset_acc``: ``(2**k,)`` accuracies in bit-mask order
  (``agm_jax.shapley.subset_masks``)."""
  v = np.asarray(subset_acc, np.float64)
  k = int(round(math.log2(v.size))) if v.size else 0
  if v.ndim != 1 or 2**k != v.size:
    raise ValueError(f"subset_acc must hold 2**k accuracies, got shape {v.shape}")
  masks = subset_masks(k)
  sizes = masks.sum(1)
  out = np.zeros(k)
  for m in range(k):
    for s in np.nonzero(~masks[:, m])[0]:
      n = int(sizes[s])
      weight = math.factorial(n) * math.factorial(k - n - 1) / math.factorial(k)
      out[m] += weight * (v[s | (1 << m)] - v[s])
  return out


def imbalance_gap(contributions: Mapping[str, float] | Sequence[float]) -> float:
  """The strongest minus the weakest modality's :func:`shapley_accuracy`."""
  values = list(contributions.values()) if isinstance(contributions, Mapping) else contributions
  values = np.asarray(values, np.float64)
  return float(values.max() - values.min())


def subset_metrics(subset_acc: Sequence[float], modalities: Sequence[str]) -> dict[str, float]:
  """The evaluation line's subset entries from the ``(2**k,)`` subset accuracies:
  ``subset_acc/<m1>+<m2>…`` for every non-empty subset, ``shapley_acc/<m>`` and
  ``imbalance_gap``."""
  names = subset_names(modalities)
  out = {f"subset_acc/{n}": float(a) for n, a in zip(names[1:], subset_acc[1:])}
  phi = shapley_accuracy(subset_acc)
  out.update({f"shapley_acc/{m}": float(p) for m, p in zip(modalities, phi)})
  out["imbalance_gap"] = imbalance_gap(phi)
  return out
