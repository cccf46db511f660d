"""CML: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, ICML 2023,
arXiv 2306.01265; authors' code QingyangZhang/CML, ``cpm/CPM_Nets.py`` ``rank_loss`` and
``miwae/train.py``; BalanceBenchmark ``balancemm/trainer/CML_trainer.py``).

The paper's principle: the confidence of a prediction must not increase when a modality is
removed. With ``conf(S) = max_c softmax(V[S])_c`` the confidence of the model with only the
modalities of subset ``S`` present (the others zero-padded: the 2**k subset passes every
agm-jax method shares, ``V[S]``), the regulariser penalises every pair ``(S, S minus j)``
it looks at::

    L = CE(V[full]) + lam * sum_pairs sum_i relu((conf_i(S - j) - conf_i(S)) * sign_i - eps)

``sign_i = 0`` when the prediction with fewer modalities is right and the one with more is
wrong (the authors' "trick 1": then more confidence with fewer modalities is deserved), else
1; the sum runs over the batch's examples, as both codes sum. The gradient flows through
every subset pass (one backward pass of the subset passes with the loss's cotangent,
``base.subset_step``). Any k >= 2.

Config section ``cml``:

* ``lam`` (0.1: BalanceBenchmark's ``trainer_config.yaml``; the authors' repository trains
  other models and states no value for these datasets), ``eps`` (0.0: ``cpm/CPM_Nets.py``).
* ``pairs``: ``"chain"`` (default; both codes): each step one random order of removing the
  modalities one at a time, from the full set down to one modality (k - 1 pairs; drawn from
  the step's key; BalanceBenchmark draws one order per epoch); ``"all"``: every pair
  ``(S, S - j)`` with at least one modality left (``k 2**(k-1) - k`` pairs).
* ``form``: ``"authors"`` (default) the loss above; ``"balancebenchmark"`` BalanceBenchmark's
  reading: the chain's losses averaged, ``(CE(V[full]) + sum_chain CE(V[S - j])) / k``, plus
  ``lam * sum_chain relu(sum_i (conf_i(S - j) - conf_i(S)))`` (the batch sum inside the
  relu, no ``sign``, no ``eps``).
* ``start_epoch`` / ``end_epoch``: outside this window the loss is ``CE(V[full])`` alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  aux_metrics,
  from_section,
  one_of,
  shapley_metrics,
  subset_step,
)

PAIRS = ("chain", "all")
FORMS = ("authors", "balancebenchmark")


@dataclasses.dataclass(frozen=True)
class HParams:
  lam: float
  eps: float
  pairs: str
  form: str
  window: Window

  def __post_init__(self):
    if self.lam < 0:
      raise ValueError(f"lam must be >= 0, got {self.lam}")
    one_of("pairs", self.pairs, PAIRS)
    one_of("form", self.form, FORMS)
    if self.form == "balancebenchmark" and self.pairs != "chain":
      raise ValueError("pairs must be 'chain' with form 'balancebenchmark' (its loss averages "
                       "the chain's cross-entropies)")


def hparams(section) -> HParams:
  return from_section(HParams, section)


def all_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(more, fewer)`` subset indices of every pair ``(S, S - j)``, ``j`` in ``S``, ``|S| >= 2``
  (bit ``m`` of an index is modality m, as ``agm_jax.shapley``'s order)."""
  pairs = [(s, s & ~(1 << j)) for s in range(2**k) for j in range(k)
           if s >> j & 1 and bin(s).count("1") >= 2]
  more, fewer = zip(*pairs)
  return np.asarray(more), np.asarray(fewer)


def chain_pairs(order: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(more, fewer)`` of the chain that removes modalities ``order[0], order[1], …`` one at a
  time from the full set, down to one modality (``k - 1`` pairs)."""
  k = order.shape[0]
  removed = jnp.cumsum(jnp.left_shift(1, order[:-1]))
  fewer = (2**k - 1) - removed
  more = jnp.concatenate([jnp.asarray([2**k - 1]), fewer[:-1]])
  return more, fewer


def confidence(v: jax.Array) -> jax.Array:
  """``(…, B)`` the largest softmax probability of each row of logits ``(…, B, K)``."""
  return jax.nn.softmax(v.astype(jnp.float32), axis=-1).max(axis=-1)


def penalty(v: jax.Array, labels: jax.Array, more, fewer, *, eps: float) -> jax.Array:
  """The authors' regulariser: ``sum_pairs sum_i relu((conf_i(fewer) - conf_i(more)) * sign_i
  - eps)`` with ``sign_i = 0`` where the fewer-modality prediction is right and the
  more-modality one wrong."""
  conf = confidence(v)
  pred = jnp.argmax(v, axis=-1)
  right_fewer = pred[fewer] == labels
  wrong_more = pred[more] != labels
  sign = jax.lax.stop_gradient(1.0 - (right_fewer & wrong_more).astype(jnp.float32))
  return jax.nn.relu((conf[fewer] - conf[more]) * sign - eps).sum()


def batch_penalty(v: jax.Array, more, fewer) -> jax.Array:
  """BalanceBenchmark's: ``sum_pairs relu(sum_i (conf_i(fewer) - conf_i(more)))``."""
  conf = confidence(v)
  return jax.nn.relu((conf[fewer] - conf[more]).sum(axis=-1)).sum()


def loss(v: jax.Array, labels: jax.Array, more, fewer, active, hp: HParams) -> jax.Array:
  """The training loss of the subset logits ``v`` ``(2**k, B, K)`` (see the module docstring);
  ``active`` false: ``CE(V[full])``."""
  k = int(np.log2(v.shape[0]))
  full = shapley.cross_entropy(v[-1].astype(jnp.float32), labels).mean()
  if hp.form == "authors":
    reg = hp.lam * penalty(v, labels, more, fewer, eps=hp.eps)
    return full + jnp.where(active, reg, 0.0)
  chain_ce = shapley.cross_entropy(v[fewer].astype(jnp.float32), labels[None]).mean(-1).sum()
  regulated = (full + chain_ce) / k + hp.lam * batch_penalty(v, more, fewer)
  return jnp.where(active, regulated, full)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del opt_state
  labels = batch["label"]
  order_key, pass_key = jax.random.split(rng)
  if ctx.hp.pairs == "chain":
    more, fewer = chain_pairs(jax.random.permutation(order_key, ctx.k))
  else:
    more, fewer = (jnp.asarray(x) for x in all_pairs(ctx.k))
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, pass_key)
  value, cotangent = jax.value_and_grad(
      lambda x: loss(x, labels, more, fewer, active, ctx.hp))(v.astype(jnp.float32))
  grads = pullback(cotangent.astype(v.dtype))
  logits = v[-1].astype(jnp.float32)
  metrics = shapley_metrics(jax.lax.stop_gradient(v), value, logits, labels, ctx.modalities)
  metrics["cml_penalty"] = penalty(jax.lax.stop_gradient(v), labels, more, fewer, eps=ctx.hp.eps)
  metrics.update(aux_metrics(aux))
  return StepOutput(grads, {}, aux.batch_stats, metrics)


METHOD = Method(name="cml", hparams=hparams, gradients=gradients)

