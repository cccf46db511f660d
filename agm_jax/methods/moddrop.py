"""ModDrop (Neverova, Wolf, Taylor, Nebout, "ModDrop: adaptive multi-modal gesture
recognition", T-PAMI 2016, arXiv 1501.00102): modality-wise dropout with a fixed probability,
the T-PAMI 2024 OGM/OPM paper's modality-dropout baseline (Sec. 2.3, 4.3.4, Table 6; Sec.
4.4.3: "drops each modality with a fixed probability during training").

In the training forward pass each example's modality-m encoder features are zeroed with
probability ``p`` (the same for every modality), as OPM drops features
(``methods/opm.py``; the released ``Modality_drop.execute_drop``): the kept features are
rescaled by ``1 / (1 - theta)``, ``theta = sum_m D_m p / sum_m D_m = p``. An example never
loses every modality: its keep pattern is drawn from the independent Bernoulli(1 - p)
patterns conditioned on at least one kept modality (:func:`keep_patterns`: rejection
sampling, done exactly), so for k = 2 and p = 1/2 each of (both, only 1, only 2) has
probability 1/3 and a modality is dropped with probability ``(p - p^k) / (1 - p^k)``. The
sources differ here: the released OPM code takes an all-dropped example out of the loss (and
skips the step if none is left); ModDrop's paper describes dropping channels with a fixed
probability and, as far as we could read, does not say what an all-dropped example does —
conditioning is our choice (every example keeps contributing, no empty batch). ``opm.keep_mask``
is not reused: it draws the modalities independently. The T-PAMI paper does not state
ModDrop's ``p``; the default 0.5 is ours. Evaluation never drops. The state logs
``drop_rate/<m>``, the batch's fraction of examples that lost modality m. Needs a late-fusion
head (``branches.late_step``). Config section ``moddrop``: ``p``, ``start_epoch``,
``end_epoch`` (outside the window nothing is dropped). Under ``pmap`` the keep patterns fold in
the device index (``subsets.device_key``): each device's examples draw their own.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, check_late_fusion, from_section
from agm_jax.transforms import dropout_schedules


@dataclasses.dataclass(frozen=True)
class HParams:
  p: float       # each modality's drop probability (before conditioning on one kept)
  window: Window

  def __post_init__(self):
    if not 0.0 <= self.p < 1.0:
      raise ValueError(f"p must be in [0, 1), got {self.p}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def keep_patterns(p, key, num_modalities: int, batch: int,
                  axis_name: str | None = None) -> jax.Array:
  """``(k, B)`` bool: per example, a keep pattern of the independent Bernoulli(1 - p) draws
  conditioned on at least one kept modality (a categorical over the ``2^k - 1`` non-empty
  patterns with weights ``(1-p)^kept * p^dropped``). Under ``pmap`` (``axis_name``) each
  device draws its own (``subsets.device_key``)."""
  patterns = jnp.asarray(shapley.subset_masks(num_modalities)[1:], bool)   # (2^k - 1, k)
  p = jnp.asarray(p, jnp.float32)
  log_w = jnp.where(patterns, jnp.log1p(-p), jnp.log(p)).sum(-1)
  idx = jax.random.categorical(subsets.device_key(key, axis_name), log_w, shape=(batch,))
  return patterns[idx].T


def drop_modalities(feats, keep, p):
  """Modality m's features of the examples with ``keep[m]`` false set to zero, the rest
  scaled by ``1 / (1 - theta)``, ``theta = sum_m D_m p / sum_m D_m`` (the released OPM's)."""
  dims = jnp.asarray([f.shape[-1] for f in feats], jnp.float32)
  theta = (dims * p).sum() / dims.sum()
  scale = 1.0 / jnp.maximum(1.0 - theta, 1e-6)
  return tuple(f * (keep[i][:, None] * scale).astype(f.dtype) for i, f in enumerate(feats))


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "moddrop")
  return dropout_schedules.with_drop_state(base, num_modalities=ctx.k, axis_name=ctx.axis_name)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]
  drop_key, pad_key = jax.random.split(rng)
  p = jnp.where(active, ctx.hp.p, 0.0)
  keep = keep_patterns(p, drop_key, ctx.k, labels.shape[0], ctx.axis_name)

  def feature_fn(feats, unimodal):
    del unimodal
    return drop_modalities(feats, keep, p), None

  out = branches.late_step(ctx, params, batch_stats, batch, pad_key, feature_fn=feature_fn)
  rate = 1.0 - keep.astype(jnp.float32).mean(axis=1)
  return StepOutput(out.grads, {"drop_rate": rate}, out.batch_stats, out.metrics)


METHOD = Method(name="moddrop", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("drop_rate",))
