"""OPM: On-the-fly Prediction Modulation (Wei, Peng, Hu et al., "On-the-fly Modulation for
Balanced Multimodal Learning", T-PAMI 2024, Algorithm 1; GeWu-Lab/BML_TPAMI2024
``code/models/Classifier.py``, ``code/main.py``).

The dominant modality's *features* are dropped in the training forward pass. With OGM's
``rho^m = mean_{j≠m} score_m / score_j`` (scores of the undropped features)::

    q^m = min(1, q_base * (1 + lam * tanh(rho^m - 1)))   if rho^m > 1, else 0

``opm.rho`` says whose rho: ``"current"`` (default) this step's, computed in the forward pass
before the fusion head as the released ``Classifier.forward`` does (l. 142–147), or
``"previous"`` the last step's, kept in the ``opm`` transform's state (the paper's Fig. 2:
"determined by the discriminative discrepancy ratio at the last iteration").

With probability ``p_exe`` per batch (the released ``execute_drop``), each example's
modality-m encoder features are replaced by zeros with probability ``q^m``, the kept features
are rescaled by ``1 / (1 - theta)``, ``theta = sum_m D_m q^m / sum_m D_m`` (inverted dropout
over the feature dimensions ``D_m``), and an example with every modality dropped leaves the
loss (the mean over the kept examples). A batch with no example left takes no optimiser step
(``main.py`` l. 95–97: ``continue``): ``transforms.score_ratio.skip_empty_batches`` wraps the
optimiser, leaving its whole state (momentum, step count) as it was; ``skipped`` counts such
steps. Evaluation never drops. The gradient itself is the plain cross-entropy gradient.
Needs a late-fusion head. The released warm-up (no drop while ``epoch <= 5``, ``main.py``
l. 91) is the window ``start_epoch=6``. Config section ``opm``: ``q_base`` (0.5), ``lam``
(0.5), ``p_exe`` (0.7) — ``train_opm.sh`` — ``rho``, ``start_epoch``, ``end_epoch``.

Paper and code differ: ``p_exe``, the ``1 / (1 - theta)`` rescale of the kept features and the
removal of the examples that lost every modality exist only in the released code
(``models/Classifier.py``, ``Modality_drop.execute_drop``, l. 31–55, and ``main.py`` l. 95–101);
the paper's Algorithm 1 (Sec. 3.2.1) drops each modality with probability ``q^m`` at every
iteration and names none of them. We follow the code; ``p_exe = 1`` gives the paper's
per-iteration drop (the rescale and the removal stay).

Under ``pmap`` (``ctx.axis_name``) the per-example keep masks fold in the device index
(``subsets.device_key``), so the devices' examples draw independently; the per-batch
``execute`` draw and ``q`` are the same on every device. One device and ``sharding`` draw as
before.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from agm_jax import subsets
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, check_late_fusion, from_section
from agm_jax.transforms import score_ratio
from agm_jax.transforms.common import batch_statistic

RHOS = ("current", "previous")


@dataclasses.dataclass(frozen=True)
class HParams:
  q_base: float
  lam: float
  p_exe: float
  rho: str      # whose rho sets q: "current" (released code) or "previous" (paper's Fig. 2)
  window: Window

  def __post_init__(self):
    if not 0.0 <= self.p_exe <= 1.0:
      raise ValueError(f"p_exe must be in [0, 1], got {self.p_exe}")
    if self.rho not in RHOS:
      raise ValueError(f"rho {self.rho!r} is unknown; valid: {list(RHOS)}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def keep_mask(q, key, num_modalities: int, batch: int, *, p_exe: float,
              axis_name: str | None = None):
  """``(keep (k, B) bool, execute)``: with probability ``p_exe`` (``execute``) each example
  keeps modality m with probability ``1 - q[m]``; otherwise every example keeps everything.
  Under ``pmap`` (``axis_name``) ``execute`` is shared by the devices, ``keep`` per device."""
  k_exe, k_mask = jax.random.split(key)
  execute = jax.random.uniform(k_exe) < p_exe
  keep = jax.random.bernoulli(subsets.device_key(k_mask, axis_name), (1.0 - q)[:, None],
                              (num_modalities, batch))
  return keep | ~execute, execute


def drop_features(feats, q, key, *, p_exe: float, axis_name: str | None = None):
  """``(feats, weight)``: modality m's features zeroed per example with probability ``q[m]``
  (in a fraction ``p_exe`` of batches), rescaled by ``1/(1-theta)``; ``weight`` (B,) is 0 for
  examples that lost every modality. ``axis_name``: as :func:`keep_mask`'s."""
  keep, execute = keep_mask(q, key, len(feats), feats[0].shape[0], p_exe=p_exe,
                            axis_name=axis_name)
  dims = jnp.asarray([f.shape[-1] for f in feats], jnp.float32)
  theta = (dims * q).sum() / dims.sum()
  scale = jnp.where(execute & (theta < 1.0), 1.0 / jnp.maximum(1.0 - theta, 1e-6), 1.0)
  out = tuple(f * (keep[i][:, None] * scale).astype(f.dtype) for i, f in enumerate(feats))
  return out, keep.any(0).astype(jnp.float32)


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "opm")
  return score_ratio.skip_empty_batches(
      optax.chain(score_ratio.opm(ctx.hp.q_base, ctx.hp.lam, num_modalities=ctx.k,
                                  axis_name=ctx.axis_name), base),
      axis_name=ctx.axis_name)


def current_drop_probabilities(ctx, unimodal, labels):
  """q from this step's ``(k, B, K)`` uni-modal logits (scores averaged over
  ``ctx.axis_name``, as the transform averages them)."""
  scores = batch_statistic(score_ratio.ogm_scores(unimodal, labels), ctx.k, "scores",
                           ctx.axis_name)
  return score_ratio.opm_drop_probabilities(score_ratio.mean_ratios(scores),
                                            q_base=ctx.hp.q_base, lam=ctx.hp.lam)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  labels = batch["label"]
  drop_key, pad_key = jax.random.split(rng)
  p_exe = ctx.hp.p_exe

  def feature_fn(feats, unimodal):
    if ctx.hp.rho == "current":
      q = current_drop_probabilities(ctx, unimodal, labels)
    else:
      q = optax.tree_utils.tree_get(opt_state, "drop_prob")
    q = jax.lax.stop_gradient(jnp.where(active, q, 0.0))
    return drop_features(feats, q, drop_key, p_exe=p_exe, axis_name=ctx.axis_name)

  out = branches.late_step(ctx, params, batch_stats, batch, pad_key, feature_fn=feature_fn)
  kept = out.weight.sum()   # the examples the forward pass kept (weight 1: any modality left)
  scores = score_ratio.ogm_scores(out.unimodal, labels)
  return StepOutput(out.grads, {"scores": scores, "active": active, "kept": kept},
                    out.batch_stats, out.metrics)


METHOD = Method(name="opm", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("drop_prob", "rho"))
