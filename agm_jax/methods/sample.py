"""Sample-level modality valuation and re-sampling (Wei, Feng, Lin, Hu, "Enhancing Multimodal
Cooperation via Sample-level Modality Valuation", CVPR 2024; BalanceBenchmark
``balancemm/trainer/Sample_trainer.py``, ``balancemm/evaluation/modalitys.py``
``Calculate_Shapley_Sample``, ``balancemm/datasets/__init__.py``
``create_dataset_sample_level`` / ``create_dataset_modality_level``).

**Valuation.** Each example's contribution of modality m is the Shapley value of the
correctness of the model's prediction over the modality subsets: ``v_i(S) = 1`` when the model
with only the modalities of S present (the others zero-padded, agm-jax's 2**k subset passes)
predicts ``y_i``, ``v_i({}) = 0``; ``phi_i^m = sum_{S without m} w(|S|) (v_i(S + m) -
v_i(S))`` (``shapley.coefficients``; :func:`sample_contributions`).

**Re-sampling.** The toolkit rebuilds the training set after every epoch (from epoch
``start_epoch`` on) with extra copies of examples in which only the low-contribution modality
is present (the others zeroed):

* ``level="sample"``: example i gets, for each modality m, ``c_i^m`` copies with only m present:
  3 when ``phi_i^m < -0.1``, 2 when ``-0.1 < phi_i^m < 0.4``, 1 when ``0.4 < phi_i^m < 1``, none
  otherwise (:func:`sample_copies`; the toolkit's thresholds);
* ``level="modality"``: from the mean contributions ``phi^m`` of a ``part_ratio`` draw of the
  examples, ``gap_m = 1 - phi^m`` and ``d = (2/3) sum_{m != n} |gap_m - gap_n| / (k - 1)``;
  ``d N`` random examples get one copy with only the modality of the largest gap present
  (:func:`modality_resampling`; the toolkit's ``func="linear"``).

agm-jax's loader keeps one data order per epoch (shared by every method and by the vmapped
seeds), so the copies are trained in-step instead: each step values its own examples with the
subset passes it runs anyway (train mode, the current parameters) and adds the copies' losses,
the cross-entropy of the subset pass with only m present, with their counts as weights::

    L = (sum_i CE(V[full]_i) + sum_i sum_m c_i^m CE(V[{m}]_i)) / (B + sum_i sum_m c_i^m)

(``level="modality"``: ``c_i^{m*} = d`` for every example, the expected number of copies). This
is the expected loss of an epoch over the enlarged training set; what differs: the toolkit
values every example once per epoch in eval mode before re-sampling, agm-jax values it when it
is trained; its copies fill their own batches. Inside the window only (``start_epoch`` 1: the
toolkit's ``modulation_starts``); outside it the plain cross-entropy. Any fusion, any k >= 2.
Config section ``sample``: ``level`` (``"modality"``: BalanceBenchmark's configured method),
``part_ratio`` (0.2), ``start_epoch``, ``end_epoch``. The train lines log ``phi/<m>`` (the
batch's mean contribution), ``copies`` (extra copies per example) and ``resampled_loss``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from agm_jax import shapley
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  aux_metrics,
  from_section,
  shapley_metrics,
  subset_step,
)

LEVELS = ("sample", "modality")
# create_dataset_sample_level's thresholds: (upper bound of the interval, copies), lowest first.
COPIES = ((-0.1, 3), (0.4, 2), (1.0, 1))


@dataclasses.dataclass(frozen=True)
class HParams:
  level: str
  part_ratio: float
  window: Window

  def __post_init__(self):
    if self.level not in LEVELS:
      raise ValueError(f"level must be one of {list(LEVELS)}, got {self.level!r}")
    if not 0.0 < self.part_ratio <= 1.0:
      raise ValueError(f"part_ratio must be in (0, 1], got {self.part_ratio}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def sample_contributions(v: jax.Array, labels: jax.Array) -> jax.Array:
  """``(k, B)`` per-example Shapley values of the correctness of the subset logits ``v``
  ``(2**k, B, K)`` (the empty subset counts as wrong)."""
  k = v.shape[0].bit_length() - 1
  correct = (jnp.argmax(v, -1) == labels[None]).astype(jnp.float32)     # (2**k, B)
  return jnp.asarray(shapley.coefficients(k)) @ correct


def sample_copies(phi: jax.Array) -> jax.Array:
  """``(k, B)`` copies per example and modality (the toolkit's thresholds, open intervals)."""
  out = jnp.zeros(phi.shape, jnp.float32)
  lower = -jnp.inf
  for upper, n in COPIES:
    out = jnp.where((phi > lower) & (phi < upper), float(n), out)
    lower = upper
  return out


def modality_resampling(phi: jax.Array, sample_key, part_ratio: float) -> tuple[jax.Array,
                                                                               jax.Array]:
  """``((k,) expected copies per example of each modality, (k,) mean contributions)``: the
  mean ``phi^m`` over a ``part_ratio`` draw of the batch's examples (with replacement, as
  ``np.random.choice``), ``gap = 1 - phi^m``, ``d = (2/3) sum_{m != n} |gap_m - gap_n| /
  (k - 1)``, all ``d`` on the modality of the largest gap."""
  k, b = phi.shape
  num = max(1, int(b * part_ratio))
  pick = jax.random.randint(sample_key, (num,), 0, b)
  mean = phi[:, pick].mean(-1)
  gap = 1.0 - mean
  diff = jnp.abs(gap[:, None] - gap[None, :]).sum() / (k - 1) * 2.0 / 3.0
  return jnp.where(jnp.arange(k) == jnp.argmax(gap), diff, 0.0), mean


def loss(v: jax.Array, labels: jax.Array, copies: jax.Array) -> jax.Array:
  """``(sum_i CE(V[full]_i) + sum_{i,m} c_i^m CE(V[{m}]_i)) / (B + sum c)``."""
  k = copies.shape[0]
  full = shapley.cross_entropy(v[-1].astype(jnp.float32), labels)                 # (B,)
  alone = shapley.cross_entropy(v[jnp.asarray([1 << m for m in range(k)])].astype(jnp.float32),
                                labels[None])                                     # (k, B)
  return (full.sum() + (copies * alone).sum()) / (labels.shape[0] + copies.sum())


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]
  draw_key, pass_key = jax.random.split(rng)
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, pass_key)
  v0 = jax.lax.stop_gradient(v)
  phi = sample_contributions(v0, labels)
  if ctx.hp.level == "sample":
    copies, mean_phi = sample_copies(phi), phi.mean(-1)
  else:
    per_modality, mean_phi = modality_resampling(phi, draw_key, ctx.hp.part_ratio)
    copies = jnp.broadcast_to(per_modality[:, None], phi.shape)
  copies = jnp.where(active, copies, 0.0)
  value, cotangent = jax.value_and_grad(lambda x: loss(x, labels, copies))(
      v.astype(jnp.float32))
  grads = pullback(cotangent.astype(v.dtype))
  logits = v0[-1].astype(jnp.float32)
  metrics = shapley_metrics(v0, shapley.cross_entropy(logits, labels).mean(), logits, labels,
                            ctx.modalities)
  metrics["copies"] = copies.sum(0).mean()
  for i, m in enumerate(ctx.modalities):
    metrics[f"phi/{m}"] = mean_phi[i]
  metrics.update(aux_metrics(aux))
  metrics["resampled_loss"] = value
  return StepOutput(grads, {}, aux.batch_stats, metrics)


METHOD = Method(name="sample", hparams=hparams, gradients=gradients)
