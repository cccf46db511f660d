"""LFM: learning the modality gap dynamically (Yang, Wan, Jiang, Xu, "Facilitating Multimodal
Classification via Dynamically Learning Modality Gap", NeurIPS 2024; authors' code
njustkmg/NeurIPS24-LFM ``Crema_epoch.py`` and ``Crema_epoch_learnable.py``; BalanceBenchmark
``balancemm/trainer/LFM_trainer.py``).

The supervised multimodal loss and an unsupervised alignment of the uni-modal predictions,
integrated with weights that change over training::

    L = 2 (a_cls CE(fused logits) + a_align mean_{pairs i<j} A(softmax(u_i), softmax(u_j)))

``u_m = W_m z_m + b/k`` the late head's uni-modal logits (the authors' two heads ``o_a``,
``o_v``; their fused logits are ``(o_a + o_v) / 2``, agm-jax's the model's own). ``A`` is the
code's ``Alignment`` (``Crema_epoch.py:38-45``, ``Crema_epoch_learnable.py:37-44``; the same
in BalanceBenchmark ``LFM_trainer.py:32-39``), with ``m = (p + q) / 2``; ``alignment`` picks
its reading:

* ``"released"``: what the code computes. ``F.kl_div(p.log(), m, 'batchmean')`` is
  ``KL(m || p)`` (the target comes second), so ``A = (KL(m || p) + KL(m || q)) / 2``, the
  batch mean (for p = (.5, .5), q = (.9, .1): 0.1180).
* ``"js"``: the Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2`` that the code's
  names (``js_score``) describe (the same example: 0.1017).

Both are zero iff p = q and symmetric in p, q; they differ in size and gradient. We could not
read the paper's own formula from here. With k > 2 the alignment is the mean over the
modality pairs (BalanceBenchmark's reading; the authors' code is two-modal). ``weights``
picks the integration strategy:

* ``"fitted"`` (default; ``Crema_epoch.py``, the authors' README command): ``a_cls`` and
  ``a_align = 1 - a_cls`` are degree-5 polynomials of the epoch index
  (``getAlpha_Learnable_Fitted``: the authors' fit of the learned curve; :data:`FITTED_CLS`).
* ``"learned"`` (``Crema_epoch_learnable.py``): ``(a_cls, a_align)`` start at ``(0.05, 0.95)``;
  before every epoch ``a_align <- clip(a_align - lr_alpha * h, 0.05, 0.95)``, ``a_cls = 1 -
  a_align``, where ``h`` is the mean over the model's first parameter tensor of the
  Hessian-vector product ``H(L_total) g_cls`` (``g_cls`` the gradient of the cross-entropy;
  ``Crema_epoch_learnable.py:55-94``); ``lr_alpha`` halves before the update at epochs 20,
  40, … The held-out data differ between the three readings:

  - the authors: the first half (8) of a fixed batch of 16 examples held out of the training
    set (``Crema_epoch_learnable.py:59-62``, ``:217-233``), in train mode at epoch 0 (a fresh
    model) and in eval mode afterwards (left so by ``val()``, ``:135``);
  - BalanceBenchmark: the first quarter of the first validation batch, in train mode
    (``LFM_trainer.py:44``, ``:145-150``);
  - agm-jax: every batch of the val split in eval mode, ``h`` the example-weighted mean of
    the batches' values (``prepare`` for epoch 0, ``epoch_end`` for the next).

  "First" is PyTorch's ``model.parameters()[0]`` (``Crema_epoch_learnable.py:87``), the first
  parameter registered: the audio ResNet's stem convolution weight. Here it is the parameter
  ``model.init`` creates first (:func:`first_param_path`; ``encoders_0``'s stem kernel on a
  ResNet), not the first in sorted key order. The weights live in the optimiser state
  (:class:`LFMState`).

The paper's third, "heuristic" strategy is not in either code and not reproduced. Needs a
late-fusion head; any k >= 2. Config section ``lfm``: ``weights``, ``alignment``,
``lr_alpha`` (1e-4, both codes), ``start_epoch`` / ``end_epoch`` (outside: the plain
cross-entropy). The train lines log ``align_weight`` (``a_align``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agm_jax import shapley, subsets
from agm_jax.methods import branches
from agm_jax.methods.base import (
  EvalOutput,
  Method,
  StepOutput,
  Window,
  check_late_fusion,
  from_section,
  inputs_of,
  one_of,
)
from agm_jax.transforms import carry as carry_tx

WEIGHTS = ("fitted", "learned")
ALIGNMENTS = ("released", "js")
# getAlpha_Learnable_Fitted: a_cls(epoch) = sum_i c_i epoch**i (a_align = 1 - a_cls: the
# code's second polynomial has the complementary coefficients).
FITTED_CLS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08,
              -5.39717505e-11)
LEARNED_START = 0.95       # the learned a_align before the first update
LEARNED_RANGE = (0.05, 0.95)
LR_HALVING = 20            # lr_alpha halves at epochs 20, 40, …


@dataclasses.dataclass(frozen=True)
class HParams:
  weights: str
  alignment: str
  lr_alpha: float
  window: Window

  def __post_init__(self):
    one_of("weights", self.weights, WEIGHTS)
    one_of("alignment", self.alignment, ALIGNMENTS)
    if self.lr_alpha < 0:
      raise ValueError(f"lr_alpha must be >= 0, got {self.lr_alpha}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


class LFMState(NamedTuple):
  epoch: jax.Array          # () int32: epochs finished
  align_weight: jax.Array   # () a_align of the learned strategy (the fitted one: unused)
  lr_alpha: jax.Array       # () the learned strategy's step size


def fitted_cls_weight(epoch) -> jax.Array:
  """``a_cls`` of the fitted strategy at ``epoch``."""
  e = jnp.asarray(epoch, jnp.float32)
  return sum(c * e**i for i, c in enumerate(FITTED_CLS))


def _kl(log_a: jax.Array, log_b: jax.Array) -> jax.Array:
  """``KL(a || b)`` per row, from log-probabilities."""
  return jnp.sum(jnp.exp(log_a) * (log_a - log_b), -1)


def pair_alignment(p_logits: jax.Array, q_logits: jax.Array, kind: str) -> jax.Array:
  """Batch mean of ``A(softmax(p), softmax(q))`` with ``m = (p + q) / 2`` (module docstring;
  ``Alignment``, ``Crema_epoch.py:38-45``): ``kind`` "released" ``(KL(m||p) + KL(m||q)) / 2``
  (what ``F.kl_div(p.log(), m)`` computes), "js" ``(KL(p||m) + KL(q||m)) / 2``."""
  one_of("alignment", kind, ALIGNMENTS)
  log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), -1)
  log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), -1)
  log_m = jnp.logaddexp(log_p, log_q) - jnp.log(2.0)
  if kind == "released":
    terms = _kl(log_m, log_p) + _kl(log_m, log_q)
  else:
    terms = _kl(log_p, log_m) + _kl(log_q, log_m)
  return (0.5 * terms).mean()


def alignment(unimodal: jax.Array, kind: str) -> jax.Array:
  """The mean of :func:`pair_alignment` over the modality pairs of ``(k, B, K)`` uni-modal
  logits (BalanceBenchmark ``LFM_trainer.py:341-347``; two modalities: the one pair)."""
  pairs = list(itertools.combinations(range(unimodal.shape[0]), 2))
  return sum(pair_alignment(unimodal[i], unimodal[j], kind) for i, j in pairs) / len(pairs)


def weights_of(hp: HParams, state: LFMState) -> tuple[jax.Array, jax.Array]:
  """``(a_cls, a_align)`` for the epoch the state is in."""
  if hp.weights == "fitted":
    cls = fitted_cls_weight(state.epoch)
    return cls, 1.0 - cls
  return 1.0 - state.align_weight, state.align_weight


def loss(logits, unimodal, labels, a_cls, a_align, kind: str) -> jax.Array:
  """``2 (a_cls CE + a_align alignment)`` (``Crema_epoch.py:69-71``); ``kind`` the alignment's
  reading."""
  return 2.0 * (a_cls * shapley.cross_entropy(logits, labels).mean()
                + a_align * alignment(unimodal, kind))


def make_tx(ctx, base):
  check_late_fusion(ctx.model, "lfm")
  state = LFMState(jnp.zeros((), jnp.int32), jnp.asarray(LEARNED_START, jnp.float32),
                   jnp.asarray(ctx.hp.lr_alpha, jnp.float32))
  return carry_tx.with_carry(base, lambda params: state, name="lfm")


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  labels = batch["label"]
  state = carry_tx.get_carry(opt_state, LFMState)
  a_cls, a_align = weights_of(ctx.hp, state)

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    uni = ctx.model.apply({"params": p}, feats, method="unimodal_logits")
    regulated = loss(logits, uni, labels, a_cls, a_align, ctx.hp.alignment)
    plain = shapley.cross_entropy(logits, labels).mean()
    return jnp.where(active, regulated, plain), branches.Objective(logits, stats, True)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  metrics = dict(out.metrics, align_weight=jnp.where(active, a_align, 0.0))
  return StepOutput(out.grads, {"carry": state}, out.batch_stats, metrics)


def _first_key_path(tree) -> tuple[str, ...]:
  """The path to the first leaf of nested dicts in their own iteration order."""
  path = ()
  while isinstance(tree, Mapping):
    key = next(iter(tree))
    path, tree = (*path, key), tree[key]
  return path


def first_param_path(model, inputs) -> tuple[str, ...]:
  """The path of the parameter ``model.init(rng, inputs, False)`` creates first: PyTorch's
  ``model.parameters()[0]`` (``Crema_epoch_learnable.py:87``), the first one registered.

  Flax builds the params dicts in creation order, but a dict that goes through a pytree
  flatten (``jit``, ``tree.map``, an optimiser step) comes back in sorted key order, so the
  order is read inside a trace of ``init`` (``eval_shape``: nothing runs). ``inputs``: arrays
  or shapes."""
  found = []

  def init(x):
    found.append(_first_key_path(model.init(jax.random.PRNGKey(0), x, False)["params"]))
    return 0

  jax.eval_shape(init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), inputs))
  return found[0]


def hvp_evaluate(ctx, params, batch_stats, batch) -> EvalOutput:
  """``Method.evaluate``'s signature, for the learned weights: ``loss`` carries the mean of
  ``H(CE) g_cls`` and ``mono_ce[0]`` of ``H(alignment) g_cls`` over the model's first-created
  parameter tensor (:func:`first_param_path`; eval mode), broadcast to the batch; the rest is
  zeros."""
  labels = batch["label"]
  first = first_param_path(ctx.model, inputs_of(batch))

  def parts(p):
    feats, _ = subsets.apply(ctx.model, p, batch_stats, inputs_of(batch), train=False,
                             method="encode")
    (logits, _), _ = subsets.apply(ctx.model, p, batch_stats, tuple(feats), train=False,
                                   method="fuse")
    uni = ctx.model.apply({"params": p}, tuple(feats), method="unimodal_logits")
    return shapley.cross_entropy(logits, labels).mean(), alignment(uni, ctx.hp.alignment)

  cls_fn = lambda p: parts(p)[0]  # noqa: E731
  align_fn = lambda p: parts(p)[1]  # noqa: E731
  g_cls = jax.grad(cls_fn)(params)
  h_cls = jax.jvp(jax.grad(cls_fn), (params,), (g_cls,))[1]
  h_align = jax.jvp(jax.grad(align_fn), (params,), (g_cls,))[1]
  b = labels.shape[0]
  leaf = lambda x: functools.reduce(operator.getitem, first, x)  # noqa: E731
  full = lambda x: jnp.full((b,), leaf(x).mean(), jnp.float32)  # noqa: E731
  k, c = ctx.k, ctx.num_classes
  zeros = jnp.zeros((b,), jnp.float32)
  return EvalOutput(full(h_cls), zeros, jnp.zeros((k, b)).at[0].set(full(h_align)),
                    jnp.zeros((k, b), bool), jnp.zeros((b, 1)), jnp.zeros((b, c)))


def learned_update(state: LFMState, h_cls: float, h_align: float, epoch: int) -> LFMState:
  """Before epoch ``epoch``: halve ``lr_alpha`` at epochs 20, 40, …, then ``a_align -=
  lr_alpha h`` with ``h = a_cls h_cls + a_align h_align`` (``H(L_total) g_cls``), clipped."""
  lr = jnp.where((epoch % LR_HALVING == 0) & (epoch != 0), state.lr_alpha / 2, state.lr_alpha)
  a_align = state.align_weight
  h = (1.0 - a_align) * h_cls + a_align * h_align
  new = jnp.clip(a_align - lr * h, *LEARNED_RANGE)
  return state._replace(align_weight=new.astype(jnp.float32), lr_alpha=lr)


def _learned(ctx, state, epoch: int, copies):
  metrics = copies.evaluate(state, hvp_evaluate, "val")
  h_cls, h_align = metrics["loss"], metrics[f"mono_ce/{ctx.modalities[0]}"]
  update = functools.partial(learned_update, h_cls=h_cls, h_align=h_align, epoch=epoch)
  return state.replace(opt_state=carry_tx.replace_carry(state.opt_state, LFMState, update))


def prepare(ctx, state, copies=None):
  if ctx.hp.weights != "learned":
    return state
  return _learned(ctx, state, 0, copies)


def epoch_end(ctx, state, epoch, evaluate, copies=None):
  del evaluate
  opt_state = carry_tx.replace_carry(state.opt_state, LFMState,
                                     lambda s: s._replace(epoch=s.epoch + 1))
  state = state.replace(opt_state=opt_state)
  if ctx.hp.weights == "learned" and epoch + 1 < copies.num_epochs:
    state = _learned(ctx, state, epoch + 1, copies)
  return state


METHOD = Method(name="lfm", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, epoch_end=epoch_end,
                trains_copies=True, prepare=prepare)

