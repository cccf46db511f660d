"""Fusion heads: ``head(features, train) -> (logits (B,K), z)``.

``features`` is a tuple of ``(B, D_m)`` arrays in modality order; ``z`` is the feature right
before the LAST classifier layer (the competition-strength probe regresses on it).

* ``SumFusion``  (late):   ``sum_m W_m f_m + b_m``;                z = concat(f)
* ``ConcatFusion`` (late): ``W concat(f) + b``;                    z = concat(f)
* ``MaxOutFusion`` (early): MaxOut MLP over concat(f), then Dense;  z = last hidden
* ``FiLMFusion`` (hybrid): ``h = gamma(f_c) * P(f_rest) + beta(f_c)``; z = relu(h)
* ``MLPFusion`` (late-capable): an MLP over concat(f), then Dense;  z = last hidden

Each head says whether it is *late* (class attribute ``late``, the one definition of "late
fusion" in agm-jax): a late head also defines ``unimodal_logits(features) -> (k,B,K)``:
modality m's block of the last linear layer on its own features plus its share of the bias
(OGM-GE's uni-modal logits), from the same parameters; they sum over m to the fused logits
when the shares sum to 1. The share ``gamma^m b`` of the concat head's bias is
``bias_split`` (:func:`bias_fractions`; T-PAMI 2024 OGM/OPM, eq. 6 splits ``b/k``, Sec. 4.5.2
and Table 14 compare other splits). ``MLPFusion`` is a multi-layer classifier, late only in
that sense: its uni-modal logits are the head on modality m's features with the others set to
zero (T-PAMI 2024 Sec. 4.3.7, Table 10: the "zero-out strategy"); they do not sum to the fused
logits.

The early-fusion head of the AGM paper (the released code's ``AV_Early_Classifier``: the two
ResNet-18 features, 512 each, concatenated, then ``MaxOut_MLP(6, 2048, 1024, 1024,
linear_layer=False)`` and ``Linear(1024, 6)``) is ``MaxOutFusion(6, hidden=(2048, 1024),
pieces=2, input_bn=True, bn=True, dropout=0.3)``::

    BatchNorm(eps 1e-4)  ->  [Dense(2048*2), max over 2 pieces, BatchNorm, Dropout(0.3)]
      ->  [Dense(1024*2), max over 2 pieces, BatchNorm, Dropout(0.3)]  = z  ->  Dense(6)

(config: ``model.fusion_options`` ``maxout_hidden=(2048, 1024)``, ``maxout_pieces=2``,
``maxout_input_bn=True``, ``maxout_bn=True``, ``maxout_dropout=0.3``). BatchNorm as PyTorch's
``BatchNorm1d`` defaults: momentum 0.1 (Flax ``momentum=0.9``), eps 1e-5 (the input's 1e-4),
statistics synchronised over ``bn_axis_name`` like the encoders'. Dropout draws from the
``"dropout"`` RNG stream, which train-mode applies pass (``agm_jax.subsets``; the masked passes
each get their own key, docs/ARCHITECTURE.md). The defaults (an int ``hidden``, no BatchNorm,
no dropout) are the plain MaxOut MLP.
"""

from __future__ import annotations

import fractions
import functools
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def _concat(features: Sequence[jnp.ndarray]) -> jnp.ndarray:
  return jnp.concatenate(tuple(features), axis=-1)


def _check(features) -> tuple:
  features = tuple(features)
  if not features:
    raise ValueError("a fusion head needs at least one modality's features")
  return features


BIAS_SPLITS = ("equal", "none", "full")


def bias_fractions(split: str, k: int) -> tuple[float, ...]:
  """The share ``gamma^m`` of the bias in modality m's uni-modal logits ``W_m f_m + gamma^m b``:
  ``"equal"`` 1/k each (eq. 6, the released ``Classifier.py``'s ``b/2``), ``"none"`` 0,
  ``"full"`` 1, or one fraction per modality written ``"1/3,2/3"`` (Table 14's rows are
  (0, 0), (1, 1), (1/2, 1/2), (1/3, 2/3) and (2/3, 1/3) for two modalities)."""
  if split == "equal":
    return (1.0 / k,) * k
  if split == "none":
    return (0.0,) * k
  if split == "full":
    return (1.0,) * k
  try:
    values = tuple(float(fractions.Fraction(v.strip())) for v in split.split(","))
  except (ValueError, ZeroDivisionError):
    values = ()
  if len(values) != k:
    raise ValueError(f"bias_split {split!r} is not one of {list(BIAS_SPLITS)} nor {k} "
                     "comma-separated fractions (e.g. '1/3,2/3')")
  return values


class SumFusion(nn.Module):
  """One ``Dense(K)`` per modality, logits added (OGM-GE's ``SumFusion``)."""
  late: ClassVar[bool] = True
  num_classes: int

  @nn.compact
  def unimodal_logits(self, features) -> jnp.ndarray:
    """``(k, B, K)``: ``W_m f_m + b_m`` per modality (each Dense keeps its own bias)."""
    features = _check(features)
    return jnp.stack([nn.Dense(self.num_classes, name=f"classifier_{i}")(f)
                      for i, f in enumerate(features)])

  def __call__(self, features, train: bool):
    del train
    features = _check(features)
    return self.unimodal_logits(features).sum(axis=0), _concat(features)


class LinearParams(nn.Module):
  """The ``kernel (D,K)`` and ``bias (K,)`` of a Dense layer (lecun-normal, zeros)."""
  num_classes: int

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (in_features, self.num_classes), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32)
    return kernel, bias


class ConcatFusion(nn.Module):
  """One ``Dense(K)`` on the concatenated features (OGM-GE's ``ConcatFusion``)."""
  late: ClassVar[bool] = True
  num_classes: int
  bias_split: str = "equal"

  def setup(self):
    self.classifier = LinearParams(self.num_classes)

  def unimodal_logits(self, features) -> jnp.ndarray:
    """``(k, B, K)``: ``f_m @ W[rows of m] + gamma^m b`` (the kernel sliced per modality;
    ``gamma`` from ``bias_split``, default ``1/k``)."""
    features = _check(features)
    dims = [f.shape[-1] for f in features]
    kernel, bias = self.classifier(sum(dims))
    ends = np.cumsum(dims)
    gammas = bias_fractions(self.bias_split, len(features))
    return jnp.stack([f @ kernel[e - d:e] + g * bias
                      for f, d, e, g in zip(features, dims, ends, gammas)])

  def __call__(self, features, train: bool):
    del train
    z = _concat(_check(features))
    kernel, bias = self.classifier(z.shape[-1])
    return z @ kernel + bias, z


class MaxOutFusion(nn.Module):
  """Early fusion: a MaxOut MLP over the concatenation, then ``Dense(K)`` (``classifier``).

  Layer ``i`` (``maxout_i``) is ``Dense(width_i * pieces)`` and the max over the pieces, then
  optionally BatchNorm (``bn``, ``bn_i``) and dropout (``dropout`` > 0); ``input_bn`` puts a
  BatchNorm (eps 1e-4, ``input_bn``) on the concatenation first. ``hidden``: an int (``layers``
  layers of that width, 2 if ``layers`` is None) or a tuple of widths (one layer each).
  ``z``: the last layer's output ``(B, width_last)``, after its BatchNorm and dropout."""
  late: ClassVar[bool] = False
  num_classes: int
  hidden: int | tuple[int, ...] = 64
  pieces: int = 4
  layers: int | None = None
  input_bn: bool = False
  bn: bool = False
  dropout: float = 0.0
  bn_axis_name: str | None = None

  @property
  def widths(self) -> tuple[int, ...]:
    """The hidden width of each maxout layer."""
    if isinstance(self.hidden, int):
      widths = (self.hidden,) * (2 if self.layers is None else self.layers)
    else:
      widths = tuple(self.hidden)
      if self.layers is not None and self.layers != len(widths):
        raise ValueError(f"layers {self.layers} does not match hidden {widths}")
    if not widths or min(widths) < 1 or self.pieces < 1:
      raise ValueError(f"MaxOutFusion needs positive hidden widths and pieces, got hidden "
                       f"{self.hidden!r}, pieces {self.pieces}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    return widths

  @nn.compact
  def __call__(self, features, train: bool):
    widths = self.widths
    h = _concat(_check(features))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             axis_name=self.bn_axis_name)
    if self.input_bn:
      h = norm(epsilon=1e-4, name="input_bn")(h)
    for i, width in enumerate(widths):
      h = nn.Dense(width * self.pieces, name=f"maxout_{i}")(h)
      h = h.reshape(*h.shape[:-1], width, self.pieces).max(axis=-1)
      if self.bn:
        h = norm(epsilon=1e-5, name=f"bn_{i}")(h)
      if self.dropout:
        h = nn.Dropout(self.dropout, deterministic=not train, name=f"dropout_{i}")(h)
    return nn.Dense(self.num_classes, name="classifier")(h), h


class FiLMFusion(nn.Module):
  """Hybrid fusion: modality ``condition_index``'s features give ``gamma``, ``beta`` (one
  Dense each) that modulate the other modalities' concatenated features projected to
  ``width`` (default: the conditioning feature size): ``h = gamma * P(x) + beta``,
  ``z = relu(h)`` ``(B, width)``, ``logits = Dense(K)(z)``."""
  late: ClassVar[bool] = False
  num_classes: int
  condition_index: int = 0
  width: int | None = None

  @nn.compact
  def __call__(self, features, train: bool):
    del train
    features = _check(features)
    k = len(features)
    if k < 2:
      raise ValueError("FiLMFusion needs at least 2 modalities (one conditions the others)")
    if not -k <= self.condition_index < k:
      raise ValueError(f"condition_index {self.condition_index} is out of range for {k} "
                       "modalities")
    c = self.condition_index % k
    cond = features[c]
    x = _concat(features[:c] + features[c + 1:])
    width = self.width or cond.shape[-1]
    x = nn.Dense(width, name="project")(x)
    gamma = nn.Dense(width, name="gamma")(cond)
    beta = nn.Dense(width, name="beta")(cond)
    z = nn.relu(gamma * x + beta)
    return nn.Dense(self.num_classes, name="classifier")(z), z


class MLPFusion(nn.Module):
  """A multi-layer classifier on the concatenation: ``Dense(width_i)`` and ReLU per hidden
  layer (``hidden_i``), then ``Dense(K)`` (``classifier``); ``z`` the last hidden layer.

  ``unimodal_logits``: the zero-out estimate of T-PAMI 2024 Sec. 4.3.7 (Table 10): modality
  m's logits are the head's on its own features with every other modality's set to 0."""
  late: ClassVar[bool] = True
  num_classes: int
  hidden: tuple[int, ...] = (256,)

  def setup(self):
    if not self.hidden or min(self.hidden) < 1:
      raise ValueError(f"MLPFusion needs positive hidden widths, got {self.hidden!r}")
    self.layers = [nn.Dense(w, name=f"hidden_{i}") for i, w in enumerate(self.hidden)]
    self.classifier = nn.Dense(self.num_classes)

  def unimodal_logits(self, features) -> jnp.ndarray:
    """``(k, B, K)``: the head on ``(0, …, f_m, …, 0)`` for each modality m."""
    features = _check(features)
    return jnp.stack([self(tuple(f if j == m else jnp.zeros_like(f)
                                 for j, f in enumerate(features)), False)[0]
                      for m in range(len(features))])

  def __call__(self, features, train: bool):
    del train
    h = _concat(_check(features))
    for layer in self.layers:
      h = nn.relu(layer(h))
    return self.classifier(h), h


HEADS = {"sum": SumFusion, "concat": ConcatFusion, "maxout": MaxOutFusion, "film": FiLMFusion,
         "mlp_head": MLPFusion}


def is_late(fusion: str) -> bool:
  """Whether the fusion named ``fusion`` is late (per-modality logits ``W_m z_m + b/k``, or
  ``mlp_head``'s zero-out estimate)."""
  head = HEADS.get(fusion)
  return bool(head is not None and head.late)


def late_fusions() -> tuple[str, ...]:
  return tuple(name for name in HEADS if is_late(name))
