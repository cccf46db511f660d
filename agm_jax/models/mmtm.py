"""MMTM two-stream classifier: per-modality ResNet-18 streams joined by Multimodal Transfer
Modules (Joze, Shaban, Iuzzolino, Koishida, "MMTM: Multimodal Transfer Module for CNN Fusion",
CVPR 2020), as the Greedy paper's model (Wu et al., ICML 2022; nyukat/greedy_multimodal_learning,
``src/model.py`` ``MMTM_MVCNN`` and ``src/balanced_mmtm.py`` ``MMTM_mitigate``).

After each chosen stage (``fusion_options.mmtm_stages``, 0-based; the released model: after
ResNet layers 2, 3, 4, i.e. stages 1, 2, 3), the module

* squeezes every stream's feature map by a global average (over time and space):
  ``s_m (B, C_m)``;
* maps the concatenation to a joint vector ``e = relu(W_s [s_0, …, s_{k-1}] + b_s)`` of width
  ``int(2 * sum(C) / ratio)`` (the released code's ``dim_out``, ratio 4);
* gates every stream per channel: ``x_m <- x_m * sigmoid(W_m e + b_m)`` (the released
  Greedy code's plain sigmoid; the MMTM paper writes ``2 * sigmoid``: ``mmtm_gate_scale``).

Each stream ends in its own classifier (``classifier_<m>``); the logits are the mean of the
per-stream logits (``(x_0 + x_1) / 2`` in ``MMTM_MVCNN.forward``), and ``z`` is the
concatenation of the pooled stream features.

Two switches for Greedy (``agm_jax.methods.greedy``), both per modality ``m``:

* ``curation`` ``(k,)`` 0/1: a *re-balancing* pass: stream m's gate is replaced by the running
  average of its gates (``MMTM_mitigate``'s ``curation_mode``), so m's stream sees no
  cross-modal input. The running averages live in the ``batch_stats`` collection
  (``mmtm_<i>/gate_avg_<m>``) and are updated by train-mode passes that may mutate it (the
  released code also updates them in eval passes, and its second average reads the first
  stream's gate; here each average is its own stream's). The average is a constant to the
  gradient, as the released code's ``.detach()`` makes it.
* ``squeeze`` (a tuple, one entry per MMTM, of per-modality ``(C_m,)`` stored squeezes) with
  ``bypass`` ``(k,)`` 0/1: stream m's joint vector is computed with every *other* modality's
  squeeze replaced by its stored average (``turnoff_cross_modal_flow`` with
  ``average_squeezemaps``): the cross-modal path into m is cut, its own path kept.

``separable = False``: the streams exchange information inside the encoders, so there is no
``encode``/``fuse`` split; subset passes run the whole model (the generic path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agm_jax.models import encoders as enc


def squeeze(x: jnp.ndarray, t: int | None) -> jnp.ndarray:
  """A stream's feature map ``(B*T, h, w, C)`` -> float32 ``(B, C)`` (mean over time/space)."""
  return enc.pool_time_space(x, t)


def excite(x: jnp.ndarray, gate: jnp.ndarray, t: int | None) -> jnp.ndarray:
  """``x (B*T, h, w, C) * gate (B, C)`` broadcast over time and space, in ``x``'s dtype."""
  if t is not None:
    gate = jnp.repeat(gate, t, axis=0)
  return x * gate[:, None, None, :].astype(x.dtype)


class Stream(nn.Module):
  """One modality's ResNet-18 trunk, run stage by stage (the stem, then each stage's blocks);
  the same layers as ``encoders.ResNet18``."""
  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    self.stem_conv = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                             use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                             kernel_init=enc.conv_init)
    self.stem_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                                param_dtype=jnp.float32, axis_name=self.bn_axis_name)
    self.blocks = [[enc.BasicBlock(self.width * 2**i, strides=2 if i > 0 and j == 0 else 1,
                                   dtype=self.dtype, bn_axis_name=self.bn_axis_name)
                    for j in range(n)] for i, n in enumerate(self.stage_sizes)]

  def stem(self, x, train: bool):
    """``x`` -> ``(feature map, T)`` (``T``: frames folded into the batch, or None)."""
    x, t = enc.fold_time(jnp.asarray(x, self.dtype))
    x = nn.relu(self.stem_bn(self.stem_conv(x), use_running_average=not train))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))), t

  def stage(self, i: int, x, train: bool):
    for block in self.blocks[i]:
      x = block(x, train)
    return x

  def __call__(self, x, train: bool):
    x, t = self.stem(x, train)
    for i in range(len(self.stage_sizes)):
      x = self.stage(i, x, train)
    return squeeze(x, t)


class MMTM(nn.Module):
  """One Multimodal Transfer Module over ``k`` streams (module docstring)."""
  channels: tuple[int, ...]
  ratio: float = 4.0
  gate_scale: float = 1.0

  @nn.compact
  def __call__(self, squeezes: Sequence[jnp.ndarray], *, curation=None, stored=None,
               bypass=None, update_average: bool = False):
    """Per-stream gates ``(B, C_m)`` from the squeezes ``(B, C_m)``; see the module docstring
    for ``curation`` / ``stored`` + ``bypass``."""
    k = len(self.channels)
    joint = nn.Dense(int(2 * sum(self.channels) / self.ratio), name="squeeze")
    heads = [nn.Dense(c, name=f"excite_{m}") for m, c in enumerate(self.channels)]
    squeezes = [s.astype(jnp.float32) for s in squeezes]
    if stored is None:
      shared = nn.relu(joint(jnp.concatenate(squeezes, -1)))
      pre = [heads[m](shared) for m in range(k)]
    else:
      pre = []
      for m in range(k):
        cut = jnp.asarray(bypass, jnp.float32)[m]
        parts = [s if j == m else (1 - cut) * s + cut * jnp.broadcast_to(
            jnp.asarray(stored[j], jnp.float32), s.shape) for j, s in enumerate(squeezes)]
        pre.append(heads[m](nn.relu(joint(jnp.concatenate(parts, -1)))))
    gates = [self.gate_scale * nn.sigmoid(p) for p in pre]
    averages, count = [], self.variable("batch_stats", "count", jnp.zeros, (), jnp.float32)
    for m, c in enumerate(self.channels):
      averages.append(self.variable("batch_stats", f"gate_avg_{m}", jnp.zeros, (c,),
                                    jnp.float32))
    if update_average and not self.is_initializing():
      n = count.value
      for m in range(k):   # the running mean over passes of the batch-mean gate
        averages[m].value = (gates[m].mean(0) + averages[m].value * n) / (n + 1)
      count.value = n + 1
    if curation is not None:   # the average is a constant (the released code detaches it)
      cur = jnp.asarray(curation, jnp.float32)
      gates = [(1 - cur[m]) * g + cur[m] * jax.lax.stop_gradient(averages[m].value)[None]
               for m, g in enumerate(gates)]
    return gates


class MMTMClassifier(nn.Module):
  """``k >= 2`` ResNet-18 streams with MMTMs after ``stages``; ``(logits, z)`` (module
  docstring). Params ``encoders_<m>`` (stream m's trunk), ``mmtm_<i>`` (after stage i),
  ``classifier_<m>`` (stream m's head)."""
  modalities: tuple[str, ...]
  encoders: tuple[Stream, ...]
  num_classes: int
  stages: tuple[int, ...] = (1, 2, 3)
  ratio: float = 4.0
  gate_scale: float = 1.0

  separable = False
  stochastic = False

  def setup(self):
    k = len(self.modalities)
    if k < 2:
      raise ValueError(f"mmtm fusion needs at least 2 modalities, got {k}")
    if len(self.encoders) != k:
      raise ValueError(f"{k} modalities but {len(self.encoders)} streams")
    depths = {len(s.stage_sizes) for s in self.encoders}
    if len(depths) != 1:
      raise ValueError(f"mmtm fusion needs streams with equal numbers of stages, got "
                       f"{sorted(depths)}")
    depth = depths.pop()
    bad = [i for i in self.stages if not 0 <= i < depth]
    if bad:
      raise ValueError(f"fusion_options.mmtm_stages has stage {bad[0]}; the streams have "
                       f"stages 0 … {depth - 1}")
    self.mmtm = {str(i): MMTM(tuple(s.width * 2**i for s in self.encoders), self.ratio,
                              self.gate_scale) for i in self.stages}
    self.classifier = [nn.Dense(self.num_classes) for _ in range(k)]

  def branches(self, inputs: Mapping[str, Any], curation, train: bool, *, squeezes=None,
               bypass=None, return_squeezes: bool = False):
    """``(per-stream logits (k, B, K), z (B, sum D))`` (and, with ``return_squeezes``, the
    squeezes entering each MMTM: a tuple over MMTMs of per-modality ``(B, C_m)``).
    ``curation`` ``(k,)`` or None; ``squeezes``: stored per-MMTM averages for ``bypass``."""
    xs, ts = [], []
    for m, name in enumerate(self.modalities):
      x, t = self.encoders[m].stem(inputs[name], train)
      xs.append(x)
      ts.append(t)
    seen = []
    depth = len(self.encoders[0].stage_sizes)
    for i in range(depth):
      xs = [self.encoders[m].stage(i, x, train) for m, x in enumerate(xs)]
      if str(i) in self.mmtm:
        sq = [squeeze(x, t) for x, t in zip(xs, ts, strict=True)]
        seen.append(tuple(sq))
        stored = None if squeezes is None else squeezes[len(seen) - 1]
        gates = self.mmtm[str(i)](sq, curation=curation, stored=stored, bypass=bypass,
                              update_average=train and self.is_mutable_collection("batch_stats"))
        xs = [excite(x, g, t) for x, g, t in zip(xs, gates, ts, strict=True)]
    feats = [squeeze(x, t) for x, t in zip(xs, ts, strict=True)]
    logits = jnp.stack([c(f) for c, f in zip(self.classifier, feats, strict=True)])
    out = (logits, jnp.concatenate(feats, -1))
    return (*out, tuple(seen)) if return_squeezes else out

  def __call__(self, inputs: Mapping[str, Any], train: bool):
    logits, z = self.branches(inputs, None, train)
    return logits.mean(0), z
