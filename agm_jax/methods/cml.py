"""CML: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, ICML 2023,
arXiv 2306.01265; authors' code QingyangZhang/CML: ``cpm/CPM_Nets.py`` (``rank_loss``,
``train``) with ``cpm/util/get_sn.py``, and ``miwae/train.py``; BalanceBenchmark
``balancemm/trainer/CML_trainer.py``).

The paper's principle: the confidence of a prediction must not increase when a modality is
removed. With ``conf(S) = max_c softmax(V[S])_c`` the confidence of the model with only the
modalities of subset ``S`` present (the others zero-padded: the 2**k subset passes every
agm-jax method shares, ``V[S]``), the regulariser penalises every pair ``(S, S minus j)``
it looks at. Both of the authors' trainers feed the model ``k`` inputs per example, the full
one and a chain that removes one modality at a time down to one (``cpm/util/get_sn.py:46-56``,
``miwae/train.py:67-86``), average the classification loss over those inputs and add the
weighted regulariser (``cpm/CPM_Nets.py:162-168``, ``miwae/train.py:280-304``)::

    L = mean_{inputs T} CE(V[T])
        + lam * sum_pairs sum_i relu((conf_i(S - j) - conf_i(S)) * sign_i - eps)

``sign_i = 0`` when the prediction with fewer modalities is right and the one with more is
wrong (``cpm/CPM_Nets.py:122``, the authors' "trick 1": then more confidence with fewer
modalities is deserved), else 1; the sum runs over the batch's examples, as every code sums.
The CE is the batch mean (``miwae/train.py:286``; ``cpm`` trains CPM-Nets, whose own
classification loss, summed over examples, stands where CE stands). The gradient flows
through every subset pass (one backward pass of the subset passes with the loss's cotangent,
``base.subset_step``). Any k >= 2.

Config section ``cml``:

* ``lam`` (0.1: BalanceBenchmark's ``trainer_config.yaml``; the authors' repository trains
  other models and states no value for these datasets), ``eps`` (0.0: ``cpm/CPM_Nets.py:123``,
  ``miwae/train.py:137``).
* ``pairs``: ``"chain"`` (default; every code): the chain of removals, ``k - 1`` pairs, the
  inputs the full set and the chain's ``k - 1`` subsets; ``"all"`` (agm-jax's): every pair
  ``(S, S - j)`` with at least one modality left (``k 2**(k-1) - k`` pairs), the inputs every
  non-empty subset.
* ``form`` (the removal order, the regulariser; the classification term is the same mean
  over the inputs in all three):

  - ``"authors"`` (default): ``cpm``'s regulariser above; the order of removal drawn per
    example, afresh each step (``miwae/train.py:67-75``, called per batch at ``:224``; ``cpm``
    draws each example's order once for the whole run, ``cpm/util/get_sn.py:46-56``, which
    needs the examples' identities and is not offered). Under ``pmap`` the draw folds in the
    device index (``subsets.device_key``).
  - ``"authors_miwae"``: the same order, ``miwae/train.py:294-302``'s regulariser: "trick 1"
    penalises only where the prediction with more modalities is right, "trick 2" adds the
    pairs where both predictions are wrong with ``conf(S)`` detached. With ``eps >= 0`` the
    value equals ``"authors"``'s; the gradient differs where both are wrong (none reaches
    ``conf(S)``).
  - ``"balancebenchmark"``: one order shared by the batch, drawn once per epoch
    (``CML_trainer.py:62-67``; agm-jax draws it from the first step's key of each epoch and
    keeps it in the optimiser state, :class:`CMLState`); the regulariser
    ``sum_pairs relu(sum_i (conf_i(S - j) - conf_i(S)))`` (``CML_trainer.py:19-22``: the batch
    sum inside the relu, no ``sign``, no ``eps``). Needs ``pairs="chain"``.

* ``start_epoch`` / ``end_epoch``: outside this window the loss is ``CE(V[full])`` alone.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley, subsets
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  aux_metrics,
  default_tx,
  from_section,
  one_of,
  shapley_metrics,
  subset_step,
)
from agm_jax.transforms import carry as carry_tx

PAIRS = ("chain", "all")
FORMS = ("authors", "authors_miwae", "balancebenchmark")


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


class CMLState(NamedTuple):
  """BalanceBenchmark's per-epoch removal order (form ``"balancebenchmark"`` only)."""
  order: jax.Array   # (k,) int32: the epoch's order of removal
  fresh: jax.Array   # () float32: 1.0 until the epoch's first step has drawn ``order``


def all_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(more, fewer)`` subset indices of every pair ``(S, S - j)``, ``j`` in ``S``, ``|S| >= 2``
  (bit ``m`` of an index is modality m, as ``agm_jax.shapley``'s order)."""
  pairs = [(s, s & ~(1 << j)) for s in range(2**k) for j in range(k)
           if s >> j & 1 and bin(s).count("1") >= 2]
  more, fewer = zip(*pairs)
  return np.asarray(more), np.asarray(fewer)


def chain_pairs(order: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(more, fewer)`` ``(k - 1, …)`` of the chain that removes modalities ``order[…, 0],
  order[…, 1], …`` one at a time from the full set, down to one modality; ``order``
  ``(…, k)``: one order, or one per example ``(B, k)``."""
  k = order.shape[-1]
  removed = jnp.moveaxis(jnp.cumsum(jnp.left_shift(1, order[..., :-1]), axis=-1), -1, 0)
  fewer = (2**k - 1) - removed
  more = jnp.concatenate([jnp.full_like(fewer[:1], 2**k - 1), fewer[:-1]])
  return more, fewer


def example_orders(key: jax.Array, batch: int, k: int) -> jax.Array:
  """``(batch, k)``: an independent random order of the k modalities for each example."""
  return jnp.argsort(jax.random.uniform(key, (batch, k)), axis=-1)


def pick(x: jax.Array, rows) -> jax.Array:
  """``x[rows[p, i], i]``: ``x`` ``(2**k, B, …)``, ``rows`` ``(P, B)``, or ``(P,)``: one row per
  pair shared by the batch; ``(P, B, …)``."""
  rows = jnp.asarray(rows)
  if rows.ndim == 1:
    return x[rows]
  return x[rows, jnp.arange(x.shape[1])]


def confidence(v: jax.Array) -> jax.Array:
  """``(…, B)`` the largest softmax probability of each row of logits ``(…, B, K)``."""
  return jax.nn.softmax(v.astype(jnp.float32), axis=-1).max(axis=-1)


def pair_confidence(v: jax.Array, labels: jax.Array, more, fewer):
  """``(conf_more, conf_fewer, right_more, right_fewer)``, each ``(P, B)``: the confidence of
  the pairs' inputs and whether their predictions are right."""
  conf, right = confidence(v), jnp.argmax(v, axis=-1) == labels
  return pick(conf, more), pick(conf, fewer), pick(right, more), pick(right, fewer)


def penalty(v: jax.Array, labels: jax.Array, more, fewer, *, eps: float) -> jax.Array:
  """``cpm/CPM_Nets.py:121-123``: ``sum_pairs sum_i relu((conf_i(fewer) - conf_i(more)) *
  sign_i - eps)`` with ``sign_i = 0`` where the fewer-modality prediction is right and the
  more-modality one wrong."""
  conf_more, conf_fewer, right_more, right_fewer = pair_confidence(v, labels, more, fewer)
  sign = 1.0 - (right_fewer & ~right_more).astype(jnp.float32)
  return jax.nn.relu((conf_fewer - conf_more) * sign - eps).sum()


def miwae_penalty(v: jax.Array, labels: jax.Array, more, fewer, *, eps: float) -> jax.Array:
  """``miwae/train.py:294-302``: ``relu((conf(fewer) - conf(more)) * right_more - eps)`` plus,
  where both predictions are wrong, ``relu(conf(fewer) - stop_gradient(conf(more)) - eps)``."""
  conf_more, conf_fewer, right_more, right_fewer = pair_confidence(v, labels, more, fewer)
  trick1 = jax.nn.relu((conf_fewer - conf_more) * right_more.astype(jnp.float32) - eps)
  both_wrong = (~right_more & ~right_fewer).astype(jnp.float32)
  trick2 = jax.nn.relu((conf_fewer - jax.lax.stop_gradient(conf_more)) * both_wrong - eps)
  return (trick1 + trick2).sum()


def batch_penalty(v: jax.Array, more, fewer) -> jax.Array:
  """``CML_trainer.py:19-22``: ``sum_pairs relu(sum_i (conf_i(fewer) - conf_i(more)))``."""
  conf = confidence(v)
  return jax.nn.relu((pick(conf, fewer) - pick(conf, more)).sum(axis=-1)).sum()


def inputs_ce(ce: jax.Array, fewer, pairs: str) -> jax.Array:
  """The mean of the per-example CE ``(2**k, B)`` over the loss's inputs and the batch: the
  full set and the chain's ``k - 1`` subsets, or for ``"all"`` every non-empty subset."""
  if pairs == "all":
    return ce[1:].mean()
  chain = pick(ce, fewer)                                                # (k - 1, B)
  return (ce[-1].mean() + chain.mean(-1).sum()) / (chain.shape[0] + 1)


def regulariser(v: jax.Array, labels: jax.Array, more, fewer, hp: HParams) -> jax.Array:
  """The form's regulariser (unweighted)."""
  if hp.form == "authors":
    return penalty(v, labels, more, fewer, eps=hp.eps)
  if hp.form == "authors_miwae":
    return miwae_penalty(v, labels, more, fewer, eps=hp.eps)
  return batch_penalty(v, more, fewer)


def loss_terms(v: jax.Array, labels: jax.Array, more, fewer, active, hp: HParams):
  """``(loss, regulariser)`` of the subset logits ``v`` ``(2**k, B, K)``: the inputs' mean CE
  plus ``lam`` times the form's regulariser (see the module docstring); ``active`` false:
  ``CE(V[full])``. The regulariser is also the train line's ``cml_penalty``."""
  ce = shapley.cross_entropy(v.astype(jnp.float32), labels[None])       # (2**k, B)
  reg = regulariser(v, labels, more, fewer, hp)
  return jnp.where(active, inputs_ce(ce, fewer, hp.pairs) + hp.lam * reg, ce[-1].mean()), reg


def loss(v: jax.Array, labels: jax.Array, more, fewer, active, hp: HParams) -> jax.Array:
  """The training loss alone (:func:`loss_terms`)."""
  return loss_terms(v, labels, more, fewer, active, hp)[0]


def epoch_order(state: CMLState, key: jax.Array) -> tuple[jax.Array, CMLState]:
  """BalanceBenchmark's order: drawn from ``key`` at the epoch's first step, then kept."""
  order = jnp.where(state.fresh > 0, jax.random.permutation(key, state.order.shape[0]),
                    state.order).astype(state.order.dtype)
  return order, CMLState(order, jnp.zeros_like(state.fresh))


def make_tx(ctx, base):
  if ctx.hp.form != "balancebenchmark":
    return default_tx(ctx, base)
  state = CMLState(jnp.arange(ctx.k, dtype=jnp.int32), jnp.ones((), jnp.float32))
  return carry_tx.with_carry(base, lambda params: state, name="cml")


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  hp, labels = ctx.hp, batch["label"]
  order_key, pass_key = jax.random.split(rng)
  tx_kwargs = {}
  if hp.pairs == "all":
    more, fewer = (jnp.asarray(x) for x in all_pairs(ctx.k))
  elif hp.form == "balancebenchmark":     # one order for every device: the unfolded key
    order, new = epoch_order(carry_tx.get_carry(opt_state, CMLState), order_key)
    more, fewer = chain_pairs(order)
    tx_kwargs = {"carry": new}
  else:
    key = subsets.device_key(order_key, ctx.axis_name)
    more, fewer = chain_pairs(example_orders(key, labels.shape[0], ctx.k))
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, pass_key)
  (value, reg), cotangent = jax.value_and_grad(
      lambda x: loss_terms(x, labels, more, fewer, active, hp), has_aux=True)(
          v.astype(jnp.float32))
  grads = pullback(cotangent.astype(v.dtype))
  logits = v[-1].astype(jnp.float32)
  metrics = shapley_metrics(jax.lax.stop_gradient(v), value, logits, labels, ctx.modalities)
  metrics["cml_penalty"] = reg
  metrics.update(aux_metrics(aux))
  return StepOutput(grads, tx_kwargs, aux.batch_stats, metrics)


def epoch_end(ctx, state, epoch, evaluate):
  """BalanceBenchmark's form: the next epoch draws a new order."""
  del epoch, evaluate
  if ctx.hp.form != "balancebenchmark":
    return state
  opt_state = carry_tx.replace_carry(state.opt_state, CMLState,
                                     lambda s: s._replace(fresh=jnp.ones_like(s.fresh)))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="cml", hparams=hparams, gradients=gradients, make_tx=make_tx,
                epoch_end=epoch_end)
