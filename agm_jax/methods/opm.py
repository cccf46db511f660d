"""OPM: On-the-fly Prediction Modulation (Wei, Peng, Hu et al., "On-the-fly Modulation for
Balanced Multimodal Learning", T-PAMI 2024; GeWu-Lab/BML_TPAMI2024 ``models/Classifier.py``).

The dominant modality's *features* are dropped in the training forward pass. With OGM's
``rho^m = mean_{j≠m} score_m / score_j`` from the PREVIOUS step (kept, with
``q``, in the ``opm`` transform's state)::

    q^m = min(1, q_base * (1 + lam * tanh(rho^m - 1)))   if rho^m > 1, else 0

With probability ``p_exe`` per batch (the released code's ``execute_drop``), each example's
modality-m encoder features are replaced by zeros with probability ``q^m``, the kept features
are rescaled by ``1 / (1 - theta)``, ``theta = sum_m D_m q^m / sum_m D_m`` (inverted dropout
over the feature dimensions ``D_m``), and an example with every modality dropped leaves the
loss. Evaluation never drops. The gradient itself is the plain cross-entropy gradient. The
released code uses the current step's rho (computed before the fusion layer); the reading
followed here uses the previous step's (docs/ARCHITECTURE.md). Needs a late-fusion head.
Config section ``opm``: ``q_base`` (0.5), ``lam`` (0.5), ``p_exe`` (0.7) — ``train_opm.sh`` —
and ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, check_late_fusion, from_section
from agm_jax.transforms import score_ratio


@dataclasses.dataclass(frozen=True)
class HParams:
  q_base: float
  lam: float
  p_exe: float
  window: Window

  def __post_init__(self):
    if not 0.0 <= self.p_exe <= 1.0:
      raise ValueError(f"p_exe must be in [0, 1], got {self.p_exe}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def drop_features(feats, q, key, *, p_exe: float):
  """``(feats, weight)``: modality m's features zeroed per example with probability ``q[m]``
  (in a fraction ``p_exe`` of batches), rescaled by ``1/(1-theta)``; ``weight`` (B,) is 0 for
  examples that lost every modality."""
  k_exe, k_mask = jax.random.split(key)
  batch = feats[0].shape[0]
  execute = jax.random.uniform(k_exe) < p_exe
  keep = jax.random.bernoulli(k_mask, (1.0 - q)[:, None], (len(feats), batch))
  keep = keep | ~execute
  dims = jnp.asarray([f.shape[-1] for f in feats], jnp.float32)
  theta = (dims * q).sum() / dims.sum()
  scale = jnp.where(execute & (theta < 1.0), 1.0 / jnp.maximum(1.0 - theta, 1e-6), 1.0)
  out = tuple(f * (keep[i][:, None] * scale).astype(f.dtype) for i, f in enumerate(feats))
  return out, keep.any(0).astype(jnp.float32)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "opm")
  return optax.chain(score_ratio.opm(ctx.hp.q_base, ctx.hp.lam, num_modalities=ctx.k,
                                     axis_name=ctx.axis_name), base)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  q = jax.lax.stop_gradient(optax.tree_utils.tree_get(opt_state, "drop_prob"))
  drop_key, pad_key = jax.random.split(rng)
  p_exe = ctx.hp.p_exe
  out = branches.late_step(ctx, params, batch_stats, batch, pad_key,
                           feature_fn=lambda f: drop_features(f, q, drop_key, p_exe=p_exe))
  scores = score_ratio.ogm_scores(out.unimodal, batch["label"])
  return StepOutput(out.grads, {"scores": scores, "active": active}, out.batch_stats,
                    out.metrics)


METHOD = Method(name="opm", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("drop_prob", "rho"))
